//! Span-name sanitization (Tempo's `span_name_sanitization`): span names with ids in them
//! (`GET /users/8f3a…/orders/17`) would make one span-metrics series each. A Drain log-pattern
//! miner learns their templates from the names it sees and replaces the varying parts with
//! `<_>` (`GET /users/<_>/orders/<_>`).
//!
//! A port of Tempo's `pkg/drain` with its default configuration and
//! `modules/generator/registry/drain_sanitizer.go` (ad33aa8): the same tokenizer, data
//! heuristic, prefix tree (depth 30, 1,000 children a node), similarity threshold 0.3, 3 to 80
//! tokens a name. Results depend on the order names are seen, as in Tempo; both see them span
//! by span. Two differences: past 100,000 patterns the oldest is forgotten (Tempo's cache
//! evicts by its own policy), and outside ASCII the character classes are Rust's (Go's
//! `unicode.IsLetter` and `IsPunct` differ on some symbols).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Tempo's modes: `enabled` renames, `dry_run` only counts what would be renamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Sanitization {
    /// Tempo writes it as `""`.
    #[default]
    #[serde(alias = "")]
    Disabled,
    #[value(name = "dry_run")]
    DryRun,
    Enabled,
}

const PARAM: &str = "<_>";
const END: &str = "<END>";
const DEPTH: usize = 30 - 2;
const SIMILARITY: f64 = 0.3;
const MAX_CHILDREN: usize = 1000;
const MIN_TOKENS: usize = 3;
const MAX_TOKENS: usize = 80;
pub const MAX_PATTERNS: usize = 100_000;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    clusters: Vec<u64>,
}

#[derive(Debug)]
struct Cluster {
    tokens: Vec<String>,
    /// The template, joined.
    text: String,
}

/// The pattern miner of one processor.
#[derive(Debug)]
pub struct SpanNames {
    mode: Sanitization,
    root: Node,
    clusters: HashMap<u64, Cluster>,
    /// Cluster ids, oldest first, to forget the oldest past `max_patterns`.
    order: VecDeque<u64>,
    max_patterns: usize,
    /// Patterns forgotten since the tree was last swept of their ids.
    forgotten: usize,
    next_id: u64,
    tokens: Vec<String>,
    /// Span names a pattern replaced (or would have, in dry run).
    sanitized: u64,
}

impl SpanNames {
    pub fn new(mode: Sanitization) -> Self {
        Self::with_max_patterns(mode, MAX_PATTERNS)
    }

    pub fn with_max_patterns(mode: Sanitization, max_patterns: usize) -> Self {
        Self {
            mode,
            root: Node::default(),
            clusters: HashMap::new(),
            order: VecDeque::new(),
            max_patterns: max_patterns.max(1),
            forgotten: 0,
            next_id: 0,
            tokens: Vec::new(),
            sanitized: 0,
        }
    }

    pub fn is_on(&self) -> bool {
        self.mode != Sanitization::Disabled
    }

    /// Span names renamed (or, in dry run, that would have been).
    pub fn sanitized(&self) -> u64 {
        self.sanitized
    }

    /// Patterns learnt.
    pub fn patterns(&self) -> usize {
        self.clusters.len()
    }

    /// Learns from `name` and, when enabled and a pattern covers it, replaces it.
    pub fn sanitize(&mut self, name: &mut String) {
        if !self.is_on() {
            return;
        }
        let Some(id) = self.train(name) else {
            return;
        };
        let template = &self.clusters[&id].text;
        if template == name {
            return;
        }
        self.sanitized += 1;
        if self.mode == Sanitization::Enabled {
            name.clear();
            name.push_str(template);
        }
    }

    fn train(&mut self, name: &str) -> Option<u64> {
        tokenize(name, &mut self.tokens);
        let n = self.tokens.len();
        if !(MIN_TOKENS..=MAX_TOKENS).contains(&n) {
            return None;
        }
        let tokens = std::mem::take(&mut self.tokens);
        let id = match self.find(&tokens) {
            Some(id) => {
                let cluster = self.clusters.get_mut(&id).expect("found clusters exist");
                let mut changed = false;
                for (mine, theirs) in cluster.tokens.iter_mut().zip(&tokens) {
                    if mine != theirs && mine != PARAM {
                        *mine = PARAM.to_string();
                        changed = true;
                    }
                }
                if changed {
                    cluster.text = join(&cluster.tokens);
                }
                id
            }
            None => self.add(&tokens),
        };
        self.tokens = tokens;
        Some(id)
    }

    fn find(&self, tokens: &[String]) -> Option<u64> {
        let mut node = self.root.children.get(&tokens.len().to_string())?;
        for (depth, token) in (1..).zip(tokens) {
            if depth >= DEPTH || depth == tokens.len() {
                break;
            }
            node = node
                .children
                .get(PARAM)
                .or_else(|| node.children.get(token))?;
        }
        // The best of the node's clusters: most similar, then most parameters.
        let mut best: Option<(u64, f64, usize)> = None;
        for id in &node.clusters {
            let Some(cluster) = self.clusters.get(id) else {
                continue;
            };
            let (mut same, mut params) = (0usize, 0usize);
            for (mine, theirs) in cluster.tokens.iter().zip(tokens) {
                if mine == PARAM {
                    params += 1;
                } else if mine == theirs {
                    same += 1;
                }
            }
            let similarity = same as f64 / cluster.tokens.len() as f64;
            let better = match best {
                None => true,
                Some((_, s, p)) => similarity > s || (similarity == s && params > p),
            };
            if better {
                best = Some((*id, similarity, params));
            }
        }
        best.filter(|(_, s, _)| *s >= SIMILARITY).map(|(id, ..)| id)
    }

    fn add(&mut self, tokens: &[String]) -> u64 {
        if self.clusters.len() >= self.max_patterns {
            if let Some(oldest) = self.order.pop_front() {
                self.clusters.remove(&oldest);
                // `find` skips forgotten ids, so the tree is swept of them only now and then
                // (Tempo every 5 minutes), not at every pattern past the bound.
                self.forgotten += 1;
                if self.forgotten >= self.max_patterns / 2 {
                    prune(&mut self.root, &self.clusters);
                    self.forgotten = 0;
                }
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.clusters.insert(
            id,
            Cluster {
                tokens: tokens.to_vec(),
                text: join(tokens),
            },
        );
        self.order.push_back(id);
        let mut node = self
            .root
            .children
            .entry(tokens.len().to_string())
            .or_default();
        let stop = DEPTH.min(tokens.len());
        for (depth, token) in (1..).zip(tokens) {
            if depth >= stop {
                break;
            }
            let key = if looks_like_data(token) || node.children.len() + 1 >= MAX_CHILDREN {
                PARAM
            } else {
                token.as_str()
            };
            node = node.children.entry(key.to_string()).or_default();
        }
        node.clusters.push(id);
        id
    }
}

/// Drops forgotten clusters' ids and emptied nodes (Tempo's `Prune`).
fn prune(node: &mut Node, clusters: &HashMap<u64, Cluster>) -> usize {
    node.children.retain(|_, child| prune(child, clusters) > 0);
    node.clusters.retain(|id| clusters.contains_key(id));
    node.children.len() + node.clusters.len()
}

fn join(tokens: &[String]) -> String {
    tokens[..tokens.len() - 1].concat()
}

fn is_hex_digit(c: char) -> bool {
    // Unicode's Hex_Digit: ASCII and the full-width forms.
    c.is_ascii_hexdigit()
        || ('\u{FF10}'..='\u{FF19}').contains(&c)
        || ('\u{FF21}'..='\u{FF26}').contains(&c)
        || ('\u{FF41}'..='\u{FF46}').contains(&c)
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

fn is_number(c: char) -> bool {
    c.is_numeric()
}

fn is_punct(c: char) -> bool {
    // Unicode's P categories; in ASCII, not the symbols $ + < = > ^ ` | ~.
    if c.is_ascii() {
        c.is_ascii_punctuation()
            && !matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~')
    } else {
        !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
    }
}

/// Tempo's `defaultIsDataHeuristic`: hex with a digit in it, or many digits.
fn looks_like_data(token: &str) -> bool {
    let mut digit = false;
    let hex = token.chars().all(|c| {
        if is_number(c) {
            digit = true;
            true
        } else {
            is_hex_digit(c) || is_punct(c)
        }
    });
    if hex && digit {
        return true;
    }
    let numbers = token.chars().filter(|c| is_number(*c)).count();
    numbers > (token.len() / 4).max(1)
}

/// Tempo's `defaultTokenizer`: runs of letters/digits, hex-and-dash runs (UUIDs), `%XX`
/// escapes, runs of spaces, and every other character alone; then `<END>`.
fn tokenize(line: &str, tokens: &mut Vec<String>) {
    tokens.clear();
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let offset = |i: usize| chars.get(i).map_or(line.len(), |(o, _)| *o);
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i].1;
        i += 1;
        let run = |mut i: usize, keep: &dyn Fn(char) -> bool| {
            while at(i).is_some_and(keep) {
                i += 1;
            }
            i
        };
        if c == '%' {
            match (at(i), at(i + 1)) {
                (Some(a), Some(b)) if is_hex_digit(a) && is_hex_digit(b) => i += 2,
                // Go's lexer cannot step back at the end of the input: `%4` ends as one token.
                (Some(_), None) => i += 1,
                _ => {}
            }
        } else if c.is_whitespace() {
            i = run(i, &|c: char| c.is_whitespace());
        } else if is_hex_digit(c) {
            i = run(i, &is_hex_digit);
            match at(i) {
                Some('-') => i = run(i + 1, &|c: char| is_hex_digit(c) || c == '-'),
                Some(c) if is_letter(c) || is_number(c) => {
                    i = run(i + 1, &|c: char| is_letter(c) || is_number(c))
                }
                _ => {}
            }
        } else if is_letter(c) || is_number(c) {
            i = run(i, &|c: char| is_letter(c) || is_number(c));
        }
        tokens.push(line[offset(start)..offset(i)].to_string());
    }
    tokens.push(END.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        tokenize(line, &mut out);
        out
    }

    #[test]
    fn names_are_cut_into_tempos_tokens() {
        assert_eq!(
            tokens("GET /users/8f3a2b1c-0d9e-4f5a-b6c7-d8e9f0a1b2c3/cart%20x"),
            [
                "GET",
                " ",
                "/",
                "users",
                "/",
                "8f3a2b1c-0d9e-4f5a-b6c7-d8e9f0a1b2c3",
                "/",
                "cart",
                "%20",
                "x",
                "<END>"
            ]
        );
        // A hex run that turns alphanumeric; a % without two hex digits stands alone.
        assert_eq!(tokens("abc1z %zz"), ["abc1z", " ", "%", "zz", "<END>"]);
        assert_eq!(tokens("a%4"), ["a", "%4", "<END>"]);
        assert_eq!(tokens(""), ["<END>"]);
    }

    #[test]
    fn ids_become_parameters_once_a_second_name_shows_them() {
        let mut names = SpanNames::new(Sanitization::Enabled);
        let mut seen = Vec::new();
        for name in [
            "GET /users/123/orders",
            "GET /users/456/orders",
            "GET /users/789/orders",
            "POST /checkout",
        ] {
            let mut name = name.to_string();
            names.sanitize(&mut name);
            seen.push(name);
        }
        assert_eq!(
            seen,
            [
                // The first is its own pattern until another one joins it.
                "GET /users/123/orders",
                "GET /users/<_>/orders",
                "GET /users/<_>/orders",
                "POST /checkout",
            ]
        );
        assert_eq!((names.sanitized(), names.patterns()), (2, 2));
    }

    #[test]
    fn dry_run_learns_and_counts_but_renames_nothing() {
        let mut names = SpanNames::new(Sanitization::DryRun);
        for n in ["GET /a/1", "GET /a/2"] {
            let mut name = n.to_string();
            names.sanitize(&mut name);
            assert_eq!(name, n);
        }
        assert_eq!(names.sanitized(), 1);
        let mut off = SpanNames::new(Sanitization::Disabled);
        let mut name = "GET /a/1".to_string();
        off.sanitize(&mut name);
        assert_eq!(off.patterns(), 0);
    }

    #[test]
    fn too_short_names_and_the_pattern_bound() {
        let mut names = SpanNames::with_max_patterns(Sanitization::Enabled, 2);
        let mut short = "GET".to_string(); // 2 tokens with <END>
        names.sanitize(&mut short);
        assert_eq!(names.patterns(), 0);
        for n in ["a b c", "a b c d", "a b c d e"] {
            names.sanitize(&mut n.to_string());
        }
        assert_eq!(names.patterns(), 2, "the oldest forgotten");
    }

    #[test]
    fn the_data_heuristic() {
        for (token, data) in [
            ("8f3a2b1c", true),
            ("deadbeef", false), // hex without a digit
            ("v2", false),
            ("order1234", true), // many digits
            ("users", false),
            ("2024-01-02", true),
        ] {
            assert_eq!(looks_like_data(token), data, "{token}");
        }
    }
}
