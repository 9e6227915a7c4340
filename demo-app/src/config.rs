//! Which role this process plays and where its neighbours are. Flags with environment
//! variables, defaults that let every role run on localhost without Docker.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// The services of the demo shop; one binary plays any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Landing page and public endpoints (port 8080).
    Frontend,
    /// Orders: calls inventory, payments, the database and notifications (8081).
    Checkout,
    /// Stock reservations (8082).
    Inventory,
    /// Charges through the uninstrumented payment gateway (8083).
    Payments,
    /// Consumes order events (8084).
    Notifications,
}

impl Role {
    /// The roles other roles call (every role but the frontend).
    pub const DOWNSTREAM: [Role; 4] = [
        Role::Checkout,
        Role::Inventory,
        Role::Payments,
        Role::Notifications,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Frontend => "frontend",
            Self::Checkout => "checkout",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::Notifications => "notifications",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Frontend => 8080,
            Self::Checkout => 8081,
            Self::Inventory => 8082,
            Self::Payments => 8083,
            Self::Notifications => 8084,
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "demo-app",
    version,
    about = "An instrumented demo shop whose traces draw a service graph. One binary, one role per process. \
             Telemetry follows the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, \
             OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, …)."
)]
pub struct Config {
    /// The service this process plays
    #[arg(long, env = "DEMO_ROLE", value_enum)]
    pub role: Role,
    /// Listen address [default: 0.0.0.0:<the role's port>]
    #[arg(long, env = "DEMO_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(
        long,
        env = "DEMO_CHECKOUT_URL",
        default_value = "http://localhost:8081"
    )]
    pub checkout_url: String,
    #[arg(
        long,
        env = "DEMO_INVENTORY_URL",
        default_value = "http://localhost:8082"
    )]
    pub inventory_url: String,
    #[arg(
        long,
        env = "DEMO_PAYMENTS_URL",
        default_value = "http://localhost:8083"
    )]
    pub payments_url: String,
    #[arg(
        long,
        env = "DEMO_NOTIFICATIONS_URL",
        default_value = "http://localhost:8084"
    )]
    pub notifications_url: String,
    /// PostgreSQL that checkout stores orders in (libpq URL; a `password` here is for local
    /// runs only: compose uses trust on its private network)
    #[arg(
        long,
        env = "DEMO_DATABASE_URL",
        default_value = "postgres://demo@127.0.0.1:5432/orders"
    )]
    pub database_url: String,
    /// NATS server that carries order events from checkout to notifications
    #[arg(long, env = "DEMO_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Multiplies every simulated delay (0 = no waiting, as in tests)
    #[arg(long, env = "DEMO_LATENCY_SCALE", default_value_t = 1.0)]
    pub latency_scale: f64,
    /// Grafana, for the landing page's links to traces and the service graph
    #[arg(long, env = "GRAFANA_URL", default_value = "http://localhost:3000")]
    pub grafana_url: String,
    /// graphgen's admin port, for the landing page's link to its live service map (/graph)
    #[arg(long, env = "GRAPHGEN_URL", default_value = "http://localhost:9464")]
    pub graphgen_url: String,
}

impl Config {
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.role.default_port())))
    }

    /// Settings for tests and local runs: every neighbour on localhost, no delays.
    pub fn for_role(role: Role) -> Self {
        Self::parse_from(["demo-app", "--role", role.name(), "--latency-scale", "0"])
    }
}

/// A downstream role and where it listens.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub role: Role,
    pub url: &'a str,
}

impl Config {
    /// Where `role` listens, as configured (`DEMO_<ROLE>_URL`).
    pub fn peer(&self, role: Role) -> Peer<'_> {
        let url = match role {
            Role::Frontend => "",
            Role::Checkout => &self.checkout_url,
            Role::Inventory => &self.inventory_url,
            Role::Payments => &self.payments_url,
            Role::Notifications => &self.notifications_url,
        };
        Peer { role, url }
    }
}
