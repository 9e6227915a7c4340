//! What `/graph` and `/api/graph` read from the query string, and the windows they accept.

use std::time::Duration;

use serde::Deserialize;

use super::history::LONGEST_WINDOW;

/// The window when none is asked for, as in the issue and Grafana's default range.
pub const DEFAULT_WINDOW: &str = "5m";
/// The shortest window: two snapshots.
const SHORTEST_WINDOW: Duration = Duration::from_secs(10);
/// What the page and the API read from the query string.
#[derive(Debug, Default, Deserialize)]
pub struct MapQuery {
    /// Whose map (`X-Scope-OrgID`'s tenant); the default tenant's when absent.
    pub tenant: Option<String>,
    pub window: Option<String>,
    /// A selected node…
    pub node: Option<String>,
    /// …or a selected edge.
    pub client: Option<String>,
    pub server: Option<String>,
    /// `off` pauses the page's refresh.
    pub refresh: Option<String>,
}

/// A query string (without `?`) of `pairs`, after `tenant=` when the map is a tenant's: the
/// page's links and the questions to peers keep the tenant they were asked for.
pub fn query_string<'a>(
    tenant: Option<&'a str>,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let pairs: Vec<(&str, &str)> = tenant
        .map(|t| ("tenant", t))
        .into_iter()
        .chain(pairs)
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// A window the user may ask for: 10s to 15m.
pub fn parse_window(text: Option<&str>) -> Result<(Duration, String), String> {
    let text = text.unwrap_or(DEFAULT_WINDOW).trim();
    let window = humantime::parse_duration(text)
        .map_err(|e| format!("window {text:?}: {e} (write e.g. 1m, 5m, 15m)"))?;
    if !(SHORTEST_WINDOW..=LONGEST_WINDOW).contains(&window) {
        return Err(format!(
            "window {text:?}: must be between {} and {}",
            humantime::format_duration(SHORTEST_WINDOW),
            humantime::format_duration(LONGEST_WINDOW)
        ));
    }
    Ok((window, humantime::format_duration(window).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked() {
        assert_eq!(
            parse_window(None).unwrap(),
            (Duration::from_secs(300), "5m".into())
        );
        assert_eq!(
            parse_window(Some("15m")).unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(parse_window(Some("30s")).unwrap().1, "30s");
        assert!(parse_window(Some("1h"))
            .unwrap_err()
            .contains("between 10s and 15m"));
        assert!(parse_window(Some("1s")).is_err());
        assert!(parse_window(Some("<script>"))
            .unwrap_err()
            .contains("write e.g."));
    }
}
