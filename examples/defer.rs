//! Go-style `defer` with quattro: a fake connection is opened, its closing deferred, and every
//! step printed in the order it happens.
//!
//! Run with `cargo run --example defer`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use quattro::defer::{self, AsyncExit, Deferrer};

/// A pretend database connection: opening and closing take a little while.
struct Connection {
    name: &'static str,
}

impl Connection {
    async fn open(name: &'static str) -> Connection {
        tokio::time::sleep(Duration::from_millis(5)).await;
        println!("  open {name}");
        Connection { name }
    }

    async fn query(&self, sql: &str) -> usize {
        println!("  {}: {sql}", self.name);
        sql.len()
    }
}

/// Entering yields a handle the body can share; the exit closes the connection.
impl AsyncExit for Connection {
    type Entered = std::sync::Arc<Connection>;
    type Exit = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn enter(self) -> (Self::Entered, Self::Exit) {
        let conn = std::sync::Arc::new(self);
        let closing = conn.clone();
        let exit = Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            println!("  close {}", closing.name);
        });
        (conn, exit)
    }
}

struct Report {
    title: String,
}

impl Report {
    /// A method: the body borrows `self`.
    async fn build(&self) -> Result<usize, String> {
        Deferrer::enable(|defer| async move {
            let (users, orders) = defer.enter((
                Connection::open("users").await,
                Connection::open("orders").await,
            ));
            defer.callback(|| println!("  metrics: report done"));
            defer.push(async { println!("  flush cache") });

            let n = users.query("select * from users").await
                + orders.query("select * from orders").await;
            println!("  {}: {n}", self.title);
            Ok(n)
        })
        .await
    }
}

/// The task-local form keeps the signature clean.
async fn audit() -> usize {
    let conn = defer::enter(Connection::open("audit").await).expect("inside defer::enable");
    conn.query("select count(*) from log").await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("closure form:");
    let report = Report {
        title: "daily".into(),
    };
    let n = report.build().await.unwrap();
    println!("returned {n}");

    println!("task-local form:");
    let n = defer::enable(audit()).await;
    println!("returned {n}");

    println!("outside defer::enable:");
    match defer::callback(|| ()) {
        Ok(()) => unreachable!(),
        Err(err) => println!("  error: {err}"),
    }
}
