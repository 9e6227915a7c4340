//! checkout's orders in a real PostgreSQL: a pool of connections (`deadpool-postgres`), the
//! schema created at start, one INSERT per order inside a CLIENT span that carries the database
//! semantic conventions of the connection actually used.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry_instrumentation_sdk::otel_trace_span;

/// The table, created at start if it is not there. The CHECK is what `?fail=postgres` breaks:
/// the database itself refuses the row.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (\
     id bigserial PRIMARY KEY, \
     sku text NOT NULL, \
     quantity integer NOT NULL CHECK (quantity > 0), \
     created_at timestamptz NOT NULL DEFAULT now())";
pub const INSERT: &str = "INSERT INTO orders (sku, quantity) VALUES ($1, $2) RETURNING id";
/// The logical name of the database in the graph (`peer.service`, which names the node before
/// `server.address` by Tempo's rules, as an instrumentation's peer-service mapping would).
pub const PEER_SERVICE: &str = "postgres";
/// Connections held at most, and how long a request waits for one, for a new connection, for
/// a statement: a database that is down is an error in seconds, never a hang.
const POOL_SIZE: usize = 8;
const WAIT: Duration = Duration::from_secs(2);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an order was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL refused the statement: its own message and SQLSTATE.
    #[error("{message}")]
    Refused { message: String, code: String },
    /// No connection (the server is down or unreachable), or it broke mid-statement.
    #[error("PostgreSQL unreachable: {0}")]
    Unreachable(String),
}

impl StoreError {
    /// `error.type` / `db.response.status_code`: the SQLSTATE, or that nothing answered.
    pub fn code(&self) -> &str {
        match self {
            Self::Refused { code, .. } => code,
            Self::Unreachable(_) => "unreachable",
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Self::Refused {
                message: db.message().to_string(),
                code: db.code().code().to_string(),
            },
            None => Self::Unreachable(e.to_string()),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => Self::Unreachable(other.to_string()),
        }
    }
}

/// A bad `--database-url`.
#[derive(Debug, thiserror::Error)]
#[error("--database-url: {0}")]
pub struct InvalidUrl(String);

/// Where the orders go.
pub struct Orders {
    pool: Pool,
    /// `db.namespace`, `server.address`, `server.port` of the spans.
    namespace: String,
    address: String,
    port: u16,
    schema: tokio::sync::Mutex<bool>,
}

impl Orders {
    /// A pool for `url`; nothing connects until the first statement.
    pub fn new(url: &str) -> Result<Self, InvalidUrl> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| InvalidUrl(e.to_string()))?;
        config
            .connect_timeout(WAIT)
            .options(format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ))
            .application_name("demo-app checkout");
        let address = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => return Err(InvalidUrl("no host".into())),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let namespace = config.get_dbname().unwrap_or("postgres").to_string();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| InvalidUrl(e.to_string()))?;
        Ok(Self {
            pool,
            namespace,
            address,
            port,
            schema: tokio::sync::Mutex::new(false),
        })
    }

    /// Creates the table if it is not there (once per process; again after a failure).
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        let mut created = self.schema.lock().await;
        if !*created {
            self.pool.get().await?.batch_execute(SCHEMA).await?;
            *created = true;
        }
        Ok(())
    }

    /// Stores one order under a CLIENT span; `quantity` 0 is refused by the table's CHECK.
    pub async fn insert(&self, sku: &str, quantity: i32) -> Result<i64, StoreError> {
        let span = otel_trace_span!(
            "db query",
            otel.name = "INSERT orders",
            otel.kind = ?opentelemetry::trace::SpanKind::Client,
            otel.status_code = Empty,
            db.system.name = "postgresql",
            db.namespace = %self.namespace,
            db.collection.name = "orders",
            db.operation.name = "INSERT",
            db.query.text = INSERT,
            db.response.status_code = Empty,
            error.type = Empty,
            server.address = %self.address,
            server.port = self.port as i64,
            peer.service = PEER_SERVICE,
        );
        async {
            let stored = async {
                self.ensure_schema().await?;
                let client = self.pool.get().await?;
                let row = client.query_one(INSERT, &[&sku, &quantity]).await?;
                Ok::<i64, StoreError>(row.get(0))
            }
            .await;
            if let Err(e) = &stored {
                let span = tracing::Span::current();
                span.record("otel.status_code", "ERROR");
                span.record("error.type", e.code());
                if let StoreError::Refused { code, .. } = e {
                    span.record("db.response.status_code", code.as_str());
                }
                crate::telemetry::record_exception("PostgresError", &e.to_string());
            }
            stored
        }
        .instrument(span)
        .await
    }

    /// The order with this id, if stored (for tests and the curious).
    pub async fn find(&self, id: i64) -> Result<Option<(String, i32)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT sku, quantity FROM orders WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}

/// `host:port` of a libpq URL, without user or password, for the landing page.
pub fn shown_address(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = match c.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(Host::Unix(p)) => p.display().to_string(),
                None => "?".into(),
            };
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
        }
        Err(_) => "an invalid URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_landing_page_never_shows_credentials() {
        assert_eq!(
            shown_address("postgres://demo:s3cret@db.example:6543/orders"),
            "db.example:6543/orders"
        );
        assert_eq!(
            shown_address("postgres://demo@postgres/orders"),
            "postgres:5432/orders"
        );
        assert_eq!(shown_address("::nonsense"), "an invalid URL");
    }

    #[test]
    fn a_bad_url_is_refused_at_start() {
        assert!(Orders::new("postgres://demo@/orders?port=x").is_err());
        let ok = Orders::new("postgres://demo@10.0.0.1:6000/shop").unwrap();
        assert_eq!(
            (ok.address.as_str(), ok.port, ok.namespace.as_str()),
            ("10.0.0.1", 6000, "shop")
        );
    }
}
