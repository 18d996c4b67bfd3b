//! Go-style `defer` with quattro: cleanup that runs when a body ends, however it ends.
//!
//! Pretend connections are opened, used and closed, and a pretend transaction commits or rolls
//! back depending on how its body ended. Five short scenes:
//!
//! 1. `Deferrer::enable`, with cleanup registered by `enter_with`, `callback` and `push`.
//! 2. `try_enable`, whose cleanup sees whether the body returned `Ok` or `Err`.
//! 3. `pop_all`, which gives the cleanup to the caller.
//! 4. The task-local form, `defer::enable` and `defer::enter`.
//! 5. The error you get with no `defer::enable` around.
//!
//! Run with `cargo run --example defer`.
//!
//! What to look for: every step prints as it happens, indented under its scene. The cleanup
//! runs after the body's last line, the last registered first (`close orders` before
//! `close users`). The second transaction rolls back because its body returned an error.

use std::time::Duration;

use quattro::defer::{self, AsyncExit, Deferrer, Outcome};

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

    async fn query(&mut self, sql: &str) -> usize {
        println!("  {}: {sql}", self.name);
        sql.len()
    }

    async fn close(self) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        println!("  close {}", self.name);
    }
}

/// A pretend transaction: its exit commits if the body returned `Ok`, and rolls back if it
/// returned `Err`, panicked or was cancelled.
struct Transaction {
    rows: Vec<&'static str>,
}

impl Transaction {
    async fn begin() -> Transaction {
        println!("  begin");
        Transaction { rows: Vec::new() }
    }

    fn insert(&mut self, row: &'static str) -> Result<(), String> {
        if row.is_empty() {
            return Err("empty row".into());
        }
        println!("  insert {row}");
        self.rows.push(row);
        Ok(())
    }
}

impl AsyncExit for Transaction {
    async fn exit(self, outcome: Outcome) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if outcome.is_ok() {
            println!("  commit {:?}", self.rows);
        } else {
            println!("  rollback {:?}: the body {outcome}", self.rows);
        }
    }
}

struct Report {
    title: String,
}

impl Report {
    /// A method: the body borrows `self`. The connections are used through their guards and
    /// closed at the end, last opened first; no `Arc` needed.
    async fn build(&self) -> Result<usize, String> {
        Deferrer::enable(|defer| async move {
            let mut users = defer.enter_with(Connection::open("users").await, |c, _| c.close());
            let mut orders = defer.enter_with(Connection::open("orders").await, |c, _| c.close());
            defer.callback(|| println!("  metrics: report done"));
            defer.push(async { println!("  flush cache") });

            let n = users.query("select * from users").await
                + orders.query("select * from orders").await;
            println!("  {} report: {n}; the body ends here", self.title);
            Ok(n)
        })
        .await
    }
}

/// `try_enable`: the transaction's exit sees whether the body returned `Ok` or `Err`.
async fn save(rows: &[&'static str]) -> Result<usize, String> {
    Deferrer::try_enable(|defer| async move {
        let mut tx = defer.enter(Transaction::begin().await);
        for row in rows {
            tx.insert(row)?;
        }
        Ok(rows.len())
    })
    .await
}

/// Opens a connection whose closing is handed to the caller once the setup succeeded.
async fn connect_checked() -> Result<(quattro::defer::Entered<Connection>, Deferrer), String> {
    Deferrer::enable(|defer| async move {
        let mut conn = defer.enter_with(Connection::open("checked").await, |c, _| c.close());
        conn.query("select 1").await; // if this failed with `?`, the connection would close here
        Ok((conn, defer.pop_all()))
    })
    .await
}

/// The task-local form keeps the signature clean.
async fn audit() -> usize {
    let mut conn =
        defer::enter(AuditLog(Connection::open("audit").await)).expect("inside defer::enable");
    conn.0.query("select count(*) from log").await
}

/// A connection whose exit is its close.
struct AuditLog(Connection);

impl AsyncExit for AuditLog {
    async fn exit(self, _: Outcome) {
        self.0.close().await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("1. Deferrer::enable: the cleanup runs when the body ends, last registered first");
    let report = Report {
        title: "daily".into(),
    };
    let n = report.build().await.unwrap();
    println!("returned {n}");

    println!("\n2. try_enable: the transaction commits if the body returns Ok, else rolls back");
    println!("returned {:?}", save(&["a", "b"]).await);
    println!("returned {:?}", save(&["a", ""]).await);

    println!("\n3. pop_all: the setup worked, so the caller takes over the closing (aclose)");
    let (mut conn, closing) = connect_checked().await.unwrap();
    println!("  setup returned; the connection is still open");
    conn.query("select 2").await;
    drop(conn);
    closing.aclose().await;

    println!("\n4. defer::enable and defer::enter: the task-local form, no Deferrer to pass");
    let n = defer::enable(audit()).await;
    println!("returned {n}");

    println!("\n5. defer::callback outside defer::enable: an error, not a panic");
    match defer::callback(|| ()) {
        Ok(()) => unreachable!(),
        Err(err) => println!("  error: {err}"),
    }
}
