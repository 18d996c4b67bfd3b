//! Property tests for the crate's promise — no leaked tasks, no lost errors, no hangs — on
//! randomly generated programs (issue 7).
//!
//! A program is a tree of task groups (with and without a concurrency limit, with background
//! tasks and a body), cancel scopes (`move_on` / `fail`, timeouts, a manual `cancel()` and a
//! deadline move at given times), gathers (with and without a limit) and `select!` drops of a
//! subtree against a timer; its leaves sleep, spin on `yield_now`, then succeed, fail or panic.
//!
//! Issue 17 added the dimensions the first generator never varied: leaves that use up tokio's
//! coop budget (`io::repeat` reads, a busy `mpsc` channel: `Pending` with an immediate wake-up,
//! at one instant of the paused clock); futures polled once and then moved into another task
//! (`Moved`: into a task of a group; `MovedOut`: a leaf into a fresh `tokio::spawn` task, where no
//! deadline encloses it any more); `cancel()` / `set_deadline()` from another task (`Scope { remote }`); aborts of
//! queued and running handles from another task and `request_shutdown(grace)` requests from another
//! task (`Group { aborts, shutdown }`: the oracle predicts the queue drops, the grace's end as
//! the group's deadline, and the cut, reported as `Ev::Cut`); and leaves whose destructor
//! panics when dropped unfinished (`panic_on_drop`): the oracle predicts the panic for a
//! group's direct tasks (recorded after the failure that cancelled the group, at the group's
//! completion for a background task, at the abort for an aborted one) and otherwise only
//! checks that it is reported at most once and belongs to such a leaf; and futures re-awaited
//! after the scope they were first polled in ended (`Reawait`: the scope's deadline is seen
//! until it fires and never after).
//! [`oracle`] computes from the tree, in exact virtual time, what must happen; the program is
//! then run and compared:
//!
//! - every node's future is dropped exactly once by the time the outermost future returns, and
//!   no task is alive in the runtime afterwards;
//! - the error (or panic) that surfaces is the one the oracle predicts, exactly once, and no
//!   cancellation is reported as an error;
//! - every leaf starts at the predicted instant (or not at all) and sees the predicted
//!   effective deadline when it starts and when it ends;
//! - the run ends at the predicted instant (a hang fails the case: the paused clock jumps to a
//!   one-hour timeout).
//!
//! Three properties: the current-thread runtime with the paused clock and panics captured
//! (exact), the same without `capture_panics` (the panic must be resumed exactly once at the
//! top), and the multi-thread runtime in real time, where only the timing-independent
//! properties are checked. When two decisive events of a program fall at the same instant, the
//! order tokio runs them in is not part of the contract, so the oracle marks the program inexact
//! and only the timing-independent properties are checked for it.
//!
//! `PROPTEST_CASES=n` multiplies the default case counts by `n / 1000` (see [`cases`]).
// The generated programs nest futures deeply; the closures are clearer inline.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fmt;
use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use futures::FutureExt;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use quattro::gather::Gather;
use quattro::{CancelScope, GroupError, TaskGroup, current_effective_deadline};
use tokio::runtime::{Handle, Runtime};
use tokio::time::{Instant, sleep, sleep_until};

// ---------------------------------------------------------------------------------------------
// The language

/// What a leaf does once it has slept and yielded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err,
    Panic,
}

/// Work a leaf does after its sleep and yields that never suspends on its own but uses up
/// tokio's cooperative budget (so it returns `Pending` with an immediate wake-up, at the same
/// instant of the paused clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spin {
    /// `n` one-byte reads from `tokio::io::repeat(0)`.
    Repeat(u32),
    /// `n` receives from a `tokio::sync::mpsc` channel filled beforehand.
    Channel(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    MoveOn,
    Fail,
}

/// A generated program. Times are in ticks relative to the node's start (1 ms of paused time;
/// 10 µs, rounded up by tokio's timer, in real time). Every duration is at least one tick, so
/// every failure happens strictly after its node started.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Leaf {
        id: u32,
        outcome: Outcome,
        dur: u64,
        yields: u32,
        spin: Option<Spin>,
        /// Holds, from its first poll until it ends, a value whose destructor panics (payload
        /// `LeafDropPanic`): dropping the leaf unfinished panics.
        panic_on_drop: bool,
    },
    Group {
        id: u32,
        limit: Option<usize>,
        children: Vec<Node>,
        background: Vec<Node>,
        body: Option<Box<Node>>,
        /// `(i, t)`: at `t`, another task aborts normal child `i` through its handle (queued
        /// or running).
        aborts: Vec<(usize, u64)>,
        /// `(t, grace)`: at `t`, another task calls `request_shutdown(grace)` on the group.
        shutdown: Option<(u64, u64)>,
    },
    Scope {
        id: u32,
        kind: ScopeKind,
        timeout: Option<u64>,
        cancel_at: Option<u64>,
        /// At `.0`, `set_deadline(start + .1)` (`None` removes the deadline).
        move_deadline: Option<(u64, Option<u64>)>,
        /// `cancel()` and `set_deadline()` come from another task (a helper spawned with
        /// `tokio::spawn`), not from beside the body.
        remote: bool,
        body: Box<Node>,
    },
    Gather {
        id: u32,
        limit: Option<usize>,
        items: Vec<Node>,
    },
    /// `select! { biased; r = body => r, _ = sleep(ticks) => Ok(()) }`: the body's future is
    /// dropped from outside when the timer wins.
    DropAfter {
        id: u32,
        ticks: u64,
        body: Box<Node>,
    },
    /// The body's future is polled once here, then moved (boxed) into a task of a group of its
    /// own and polled there from then on: the same deadlines enclose it before and after.
    Moved { id: u32, body: Box<Node> },
    /// The leaf's future is polled once here, then moved into a fresh task spawned with
    /// `tokio::spawn` (outside every scope and group) and awaited through its `JoinHandle`;
    /// aborted if this node is dropped. The leaf sees the enclosing deadlines at its start and
    /// none at its end. (Its future is dropped in that task: checked after the run's helpers
    /// are reaped, not before the outermost future returns.)
    MovedOut { id: u32, body: Box<Node> },
    /// `move_on_after(ticks, &mut body)`, then, if that scope ended first, `body` awaited
    /// again outside it: the scope's deadline is in force until `ticks`, and gone after.
    Reawait {
        id: u32,
        ticks: u64,
        body: Box<Node>,
    },
}

impl Node {
    fn id(&self) -> u32 {
        match self {
            Node::Leaf { id, .. }
            | Node::Group { id, .. }
            | Node::Scope { id, .. }
            | Node::Gather { id, .. }
            | Node::DropAfter { id, .. }
            | Node::Moved { id, .. }
            | Node::MovedOut { id, .. }
            | Node::Reawait { id, .. } => *id,
        }
    }

    /// Numbers the nodes 0.. in pre-order; returns how many there are.
    fn number(&mut self, next: &mut u32) {
        let set = |id: &mut u32, next: &mut u32| {
            *id = *next;
            *next += 1;
        };
        match self {
            Node::Leaf { id, .. } => set(id, next),
            Node::Group {
                id,
                children,
                background,
                body,
                ..
            } => {
                set(id, next);
                for c in background.iter_mut().chain(children.iter_mut()) {
                    c.number(next);
                }
                if let Some(b) = body {
                    b.number(next);
                }
            }
            Node::Scope { id, body, .. }
            | Node::DropAfter { id, body, .. }
            | Node::Moved { id, body }
            | Node::MovedOut { id, body }
            | Node::Reawait { id, body, .. } => {
                set(id, next);
                body.number(next);
            }
            Node::Gather { id, items, .. } => {
                set(id, next);
                for c in items {
                    c.number(next);
                }
            }
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        match self {
            Node::Leaf { .. } => {}
            Node::Group {
                children,
                background,
                body,
                ..
            } => {
                for c in background.iter().chain(children) {
                    c.visit(f);
                }
                if let Some(b) = body {
                    b.visit(f);
                }
            }
            Node::Scope { body, .. }
            | Node::DropAfter { body, .. }
            | Node::Moved { body, .. }
            | Node::MovedOut { body, .. }
            | Node::Reawait { body, .. } => body.visit(f),
            Node::Gather { items, .. } => items.iter().for_each(|c| c.visit(f)),
        }
    }
}

/// Rust-like notation, so that a failing case reads as the program it is.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Leaf {
                id,
                outcome,
                dur,
                yields,
                spin,
                panic_on_drop,
            } => {
                write!(f, "#{id} leaf(sleep {dur}, yield x{yields}, ")?;
                if let Some(spin) = spin {
                    write!(f, "{spin:?}, ")?;
                }
                if *panic_on_drop {
                    write!(f, "panics if dropped, ")?;
                }
                write!(f, "{outcome:?})")
            }
            Node::Group {
                id,
                limit,
                children,
                background,
                body,
                aborts,
                shutdown,
            } => {
                write!(f, "#{id} group(limit {limit:?}")?;
                for (i, t) in aborts {
                    write!(f, ", abort child {i} at {t}")?;
                }
                if let Some((t, g)) = shutdown {
                    write!(f, ", shutdown(grace {g}) at {t}")?;
                }
                write!(f, ") ")?;
                let mut m = f.debug_map();
                if !background.is_empty() {
                    m.entry(&"background", background);
                }
                if !children.is_empty() {
                    m.entry(&"spawn", children);
                }
                if let Some(b) = body {
                    m.entry(&"body", b);
                }
                m.finish()
            }
            Node::Scope {
                id,
                kind,
                timeout,
                cancel_at,
                move_deadline,
                remote,
                body,
            } => {
                write!(f, "#{id} {kind:?}(")?;
                if *remote {
                    write!(f, "remote, ")?;
                }
                if let Some(t) = timeout {
                    write!(f, "timeout {t}, ")?;
                }
                if let Some(c) = cancel_at {
                    write!(f, "cancel at {c}, ")?;
                }
                if let Some((t, d)) = move_deadline {
                    write!(f, "at {t} set_deadline({d:?}), ")?;
                }
                write!(f, ") ")?;
                f.debug_list().entry(body).finish()
            }
            Node::Gather { id, limit, items } => {
                write!(f, "#{id} gather(limit {limit:?}) ")?;
                f.debug_list().entries(items).finish()
            }
            Node::DropAfter { id, ticks, body } => {
                write!(f, "#{id} drop_after({ticks}) ")?;
                f.debug_list().entry(body).finish()
            }
            Node::Moved { id, body } => {
                write!(f, "#{id} moved_after_first_poll ")?;
                f.debug_list().entry(body).finish()
            }
            Node::MovedOut { id, body } => {
                write!(f, "#{id} moved_to_a_fresh_task_after_first_poll ")?;
                f.debug_list().entry(body).finish()
            }
            Node::Reawait { id, ticks, body } => {
                write!(
                    f,
                    "#{id} move_on_after({ticks}, &mut body) then body.await "
                )?;
                f.debug_list().entry(body).finish()
            }
        }
    }
}

/// A whole program: the root is always a group (so that every panic has a group to land in).
#[derive(Clone, PartialEq, Eq)]
pub struct Program {
    pub root: Node,
    pub nodes: u32,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#?}", self.root)
    }
}

fn program(mut root: Node) -> Program {
    let mut nodes = 0;
    root.number(&mut nodes);
    Program { root, nodes }
}

// ---------------------------------------------------------------------------------------------
// The generator

fn ticks() -> impl Strategy<Value = u64> {
    1u64..=1200
}

fn leaf() -> impl Strategy<Value = Node> {
    let outcome = prop_oneof![
        6 => Just(Outcome::Ok),
        2 => Just(Outcome::Err),
        1 => Just(Outcome::Panic),
    ];
    let spin = option::weighted(
        0.2,
        prop_oneof![
            (1u32..=400).prop_map(Spin::Repeat),
            (1u32..=400).prop_map(Spin::Channel),
        ],
    );
    (
        outcome,
        1u64..=1000,
        0u32..=3,
        spin,
        proptest::bool::weighted(0.07),
    )
        .prop_map(|(outcome, dur, yields, spin, panic_on_drop)| Node::Leaf {
            id: 0,
            outcome,
            dur,
            yields,
            spin,
            panic_on_drop,
        })
}

fn limit() -> impl Strategy<Value = Option<usize>> {
    option::weighted(0.5, 1usize..=3)
}

/// Aborts of normal children by index (out-of-range indices and repeats are dropped).
fn aborts() -> impl Strategy<Value = Vec<(usize, u64)>> {
    option::weighted(0.3, vec((0usize..3, ticks()), 1..=2)).prop_map(Option::unwrap_or_default)
}

/// A shutdown request at some tick, with a grace of zero (a hard cancel) or up to 600 ticks.
fn shutdown() -> impl Strategy<Value = Option<(u64, u64)>> {
    option::weighted(
        0.2,
        (ticks(), prop_oneof![1 => Just(0u64), 3 => 1u64..=600]),
    )
}

fn make_group(
    limit: Option<usize>,
    children: Vec<Node>,
    background: Vec<Node>,
    body: Option<Node>,
    aborts: Vec<(usize, u64)>,
    shutdown: Option<(u64, u64)>,
) -> Node {
    let mut seen = HashSet::new();
    let aborts = aborts
        .into_iter()
        .filter(|&(i, _)| i < children.len() && seen.insert(i))
        .collect();
    Node::Group {
        id: 0,
        limit,
        children,
        background,
        body: body.map(Box::new),
        aborts,
        shutdown,
    }
}

fn group(inner: impl Strategy<Value = Node> + Clone) -> impl Strategy<Value = Node> {
    (
        limit(),
        vec(inner.clone(), 0..=3),
        vec(inner.clone(), 0..=1),
        option::weighted(0.4, inner),
        aborts(),
        shutdown(),
    )
        .prop_map(|(limit, children, background, body, aborts, shutdown)| {
            make_group(limit, children, background, body, aborts, shutdown)
        })
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 12, 3, |inner| {
        prop_oneof![
            3 => group(inner.clone()),
            3 => (
                prop_oneof![Just(ScopeKind::MoveOn), Just(ScopeKind::Fail)],
                option::weighted(0.7, ticks()),
                option::weighted(0.3, ticks()),
                option::weighted(0.3, (ticks(), option::weighted(0.8, ticks()))),
                proptest::bool::weighted(0.4),
                inner.clone(),
            )
                .prop_map(|(kind, timeout, cancel_at, move_deadline, remote, body)| {
                    Node::Scope {
                        id: 0,
                        kind,
                        timeout,
                        cancel_at,
                        move_deadline,
                        remote,
                        body: Box::new(body),
                    }
                }),
            2 => (limit(), vec(inner.clone(), 0..=3)).prop_map(|(limit, items)| Node::Gather {
                id: 0,
                limit,
                items,
            }),
            1 => (ticks(), inner.clone()).prop_map(|(ticks, body)| Node::DropAfter {
                id: 0,
                ticks,
                body: Box::new(body),
            }),
            1 => inner.clone().prop_map(|body| Node::Moved {
                id: 0,
                body: Box::new(body),
            }),
            // A destructor panic in the detached task would reach no one: not generated.
            1 => leaf().prop_map(|mut body| {
                if let Node::Leaf { panic_on_drop, .. } = &mut body {
                    *panic_on_drop = false;
                }
                Node::MovedOut {
                    id: 0,
                    body: Box::new(body),
                }
            }),
            1 => (ticks(), inner).prop_map(|(ticks, body)| Node::Reawait {
                id: 0,
                ticks,
                body: Box::new(body),
            }),
        ]
    })
}

fn programs() -> impl Strategy<Value = Program> {
    (
        limit(),
        vec(node(), 1..=3),
        vec(node(), 0..=1),
        option::weighted(0.3, node()),
        aborts(),
        shutdown(),
    )
        .prop_map(|(limit, children, background, body, aborts, shutdown)| {
            program(make_group(
                limit, children, background, body, aborts, shutdown,
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// The oracle

/// What surfaces: a leaf's error or panic, or a `fail` scope's `Cancelled`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ev {
    Err(u32),
    Panic(u32),
    Cancelled {
        scope: u32,
        by_cancel: bool,
    },
    /// A group cut off when the grace of its shutdown ran out (a cancelled `GroupError`).
    Cut(u32),
    /// A leaf's destructor panicked as it was dropped unfinished.
    DropPanic(u32),
}

/// The payload of a leaf's destructor panic.
#[derive(Debug)]
struct LeafDropPanic(u32);

/// Panics as it is dropped while armed (unless already unwinding).
struct Bomb {
    id: u32,
    armed: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            std::panic::panic_any(LeafDropPanic(self.id));
        }
    }
}

/// The panic payload of a leaf.
#[derive(Debug)]
struct LeafPanic(u32);

const NEVER: u64 = u64::MAX;

#[derive(Clone, Debug, PartialEq)]
enum Res {
    Ok,
    Fail(Vec<Ev>),
    Killed,
}

#[derive(Clone, Debug)]
struct Out {
    end: u64,
    res: Res,
}

/// A scope's deadline over time (absolute ticks).
struct Timeline {
    d0: Option<u64>,
    moved: Option<(u64, Option<u64>)>,
}

impl Timeline {
    fn at(&self, t: u64) -> Option<u64> {
        match self.moved {
            Some((tm, new)) if t >= tm => new,
            _ => self.d0,
        }
    }
}

fn effective(env: &[Timeline], t: u64) -> Option<u64> {
    env.iter().filter_map(|s| s.at(t)).min()
}

/// A leaf's start as the oracle sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// Started at this tick, seeing this effective deadline.
    At(u64, Option<u64>),
    /// Killed at the instant it was spawned: whether its first poll happens is up to the
    /// scheduler.
    Unknown,
}

#[derive(Default, Debug)]
struct Rec {
    starts: BTreeMap<u32, Start>,
    /// Leaves that ran to their end, with the effective deadline they saw there.
    ends: BTreeMap<u32, Option<u64>>,
    /// (time, source): every event that decides something. Two sources at one instant make
    /// the program inexact.
    events: Vec<(u64, u32)>,
    ambiguous: bool,
    /// Leaves that panic when dropped and were killed; a group claims those whose panic it
    /// records (its direct tasks, killed by its own failure, cut or completion, or by an
    /// abort). One left unclaimed makes the program inexact: where the panic of a leaf
    /// dropped with a scope's body or a dropped group lands is checked only for being
    /// reported once.
    drop_killed: Vec<u32>,
}

/// The oracle's prediction for a program.
#[derive(Debug)]
pub struct Prediction {
    out: Out,
    starts: BTreeMap<u32, Start>,
    ends: BTreeMap<u32, Option<u64>>,
    /// No two decisive events coincide: timing and outcome are fully determined.
    exact: bool,
}

pub fn oracle(p: &Program) -> Prediction {
    let mut rec = Rec::default();
    let out = sim(&p.root, 0, NEVER, &mut Vec::new(), &mut rec);
    let mut events = rec.events.clone();
    events.sort_unstable();
    events.dedup();
    let tie = events.windows(2).any(|w| w[0].0 == w[1].0);
    Prediction {
        out,
        starts: rec.starts,
        ends: rec.ends,
        exact: !tie && !rec.ambiguous && rec.drop_killed.is_empty(),
    }
}

/// Runs `node` from `start`, killed from outside at `kill` unless it ends first (an end at
/// `kill` itself counts as ending first: any other event at that instant is a tie).
fn sim(node: &Node, start: u64, kill: u64, env: &mut Vec<Timeline>, rec: &mut Rec) -> Out {
    if kill == start {
        // Spawned and aborted in one instant (a background task of a group with no other
        // work): whether any of it is polled first is up to the scheduler. Nothing in it can
        // end (every duration is at least one tick), so only the starts are unknown.
        node.visit(&mut |n| {
            if let Node::Leaf {
                id, panic_on_drop, ..
            } = *n
            {
                rec.starts.insert(id, Start::Unknown);
                // Whether it panics depends on whether it was polled.
                rec.ambiguous |= panic_on_drop;
            }
        });
        return Out {
            end: kill,
            res: Res::Killed,
        };
    }
    match node {
        &Node::Leaf {
            id,
            outcome,
            dur,
            panic_on_drop,
            ..
        } => {
            rec.starts
                .insert(id, Start::At(start, effective(env, start)));
            let end = start + dur;
            if end > kill {
                if panic_on_drop {
                    rec.drop_killed.push(id);
                }
                return Out {
                    end: kill,
                    res: Res::Killed,
                };
            }
            rec.events.push((end, id));
            rec.ends.insert(id, effective(env, end));
            let res = match outcome {
                Outcome::Ok => Res::Ok,
                Outcome::Err => Res::Fail(vec![Ev::Err(id)]),
                Outcome::Panic => Res::Fail(vec![Ev::Panic(id)]),
            };
            Out { end, res }
        }
        Node::Scope {
            id,
            kind,
            timeout,
            cancel_at,
            move_deadline,
            body,
            ..
        } => {
            let id = *id;
            let d0 = timeout.map(|t| start + t);
            let moved = move_deadline.map(|(t, d)| (start + t, d.map(|d| start + d)));
            let by_deadline = match moved {
                None => d0,
                Some((tm, _)) if d0 == Some(tm) => {
                    rec.ambiguous = true; // the move races the deadline
                    d0
                }
                Some(_) if d0.is_some_and(|d| d < moved.unwrap().0) => d0,
                // Moving the deadline into the past cancels at the move.
                Some((tm, new)) => new.map(|d| d.max(tm)),
            };
            let by_cancel = cancel_at.map(|c| start + c);
            if by_cancel.is_some() && by_cancel == by_deadline {
                rec.ambiguous = true; // which cause `Cancelled` reports is a race
            }
            let (fire, cancelled) = match (by_deadline, by_cancel) {
                (Some(d), Some(c)) if c < d => (c, true),
                (Some(d), _) => (d, false),
                (None, Some(c)) => (c, true),
                (None, None) => (NEVER, false),
            };
            env.push(Timeline { d0, moved });
            let inner = sim(body, start, kill.min(fire), env, rec);
            env.pop();
            let out = match inner.res {
                Res::Killed if fire <= kill => Out {
                    end: fire,
                    res: match kind {
                        ScopeKind::MoveOn => Res::Ok,
                        ScopeKind::Fail => Res::Fail(vec![Ev::Cancelled {
                            scope: id,
                            by_cancel: cancelled,
                        }]),
                    },
                },
                _ => inner,
            };
            // The scope's timers that went off before it ended.
            for t in [moved.map(|m| m.0), by_cancel, by_deadline]
                .into_iter()
                .flatten()
            {
                if t <= out.end {
                    rec.events.push((t, id));
                }
            }
            out
        }
        // Moving the future changes neither its timing nor the deadlines it sees.
        Node::Moved { body, .. } => sim(body, start, kill, env, rec),
        // In the fresh task no scope encloses the leaf: no deadline at its end.
        Node::MovedOut { body, .. } => {
            let out = sim(body, start, kill, env, rec);
            if let Some(end) = rec.ends.get_mut(&body.id()) {
                *end = None;
            }
            out
        }
        // Nothing is killed when the scope ends (it held only a reference); its deadline is
        // seen until then, and no longer.
        &Node::Reawait {
            id,
            ticks,
            ref body,
        } => {
            let t = start + ticks;
            env.push(Timeline {
                d0: Some(t),
                moved: Some((t, None)),
            });
            let out = sim(body, start, kill, env, rec);
            env.pop();
            if t <= out.end {
                rec.events.push((t, id));
            }
            out
        }
        &Node::DropAfter {
            id,
            ticks,
            ref body,
        } => {
            let at = start + ticks;
            let inner = sim(body, start, kill.min(at), env, rec);
            let out = match inner.res {
                Res::Killed if at <= kill => Out {
                    end: at,
                    res: Res::Ok,
                },
                _ => inner,
            };
            if at <= out.end {
                rec.events.push((at, id));
            }
            out
        }
        Node::Group {
            id,
            limit,
            children,
            background,
            body,
            aborts,
            shutdown,
        } => {
            let mut abort_at = vec![NEVER; children.len()];
            for &(i, t) in aborts {
                abort_at[i] = start + t;
            }
            let shutdown = shutdown.map(|(t, g)| (start + t, start + t + g));
            // The end of the grace is the group's deadline from the request on.
            if let Some((s, cut)) = shutdown {
                env.push(Timeline {
                    d0: None,
                    moved: Some((s, Some(cut))),
                });
            }
            let out = sim_group(
                *id,
                start,
                kill,
                *limit,
                children,
                background,
                body.as_deref(),
                &abort_at,
                shutdown,
                true,
                env,
                rec,
            );
            if shutdown.is_some() {
                env.pop();
            }
            // Each abort, the request and the cut are sources of their own: two of them at one
            // instant are a tie too.
            let times = abort_at
                .iter()
                .copied()
                .chain(shutdown.into_iter().flat_map(|(s, c)| {
                    // Grace 0: the request is the cut, one event.
                    if s == c { vec![c] } else { vec![s, c] }
                }));
            for (k, t) in times.enumerate() {
                if t <= out.end {
                    rec.events.push((t, *id | ((k as u32 + 1) << 24)));
                }
            }
            out
        }
        Node::Gather { id, limit, items } => {
            let never = vec![NEVER; items.len()];
            sim_group(
                *id,
                start,
                kill,
                *limit,
                items,
                &[],
                None,
                &never,
                None,
                false,
                env,
                rec,
            )
        }
    }
}

struct Pass {
    /// The earliest failure.
    first: Option<(u64, Vec<Ev>)>,
    /// When the body and every normal task ended, if they all succeeded.
    done: Option<u64>,
    /// Direct tasks that panic when dropped, killed by the pass's `kill`.
    killed_panicky: Vec<u32>,
    /// Background tasks that panic when dropped, aborted when the group completed.
    completion_panics: Vec<u32>,
}

fn sim_group(
    id: u32,
    start: u64,
    kill: u64,
    limit: Option<usize>,
    normal: &[Node],
    background: &[Node],
    body: Option<&Node>,
    abort_at: &[u64],
    shutdown: Option<(u64, u64)>,
    claims: bool,
    env: &mut Vec<Timeline>,
    rec: &mut Rec,
) -> Out {
    let dropped_queue = shutdown.map_or(NEVER, |s| s.0);
    let cut = shutdown.map_or(NEVER, |s| s.1);
    let pass = |kill: u64, env: &mut Vec<Timeline>, rec: &mut Rec| {
        group_pass(
            start,
            kill,
            limit,
            normal,
            background,
            body,
            abort_at,
            dropped_queue,
            env,
            rec,
        )
    };
    // Events before the first failure do not depend on it; find it, then run again with the
    // group killed there.
    let first = pass(kill.min(cut), env, &mut Rec::default()).first;
    // The destructor panics of the direct tasks killed by the end of this group's own pass:
    // recorded after the failure that ended it.
    let claim = |killed: Vec<u32>, rec: &mut Rec, evs: &mut Vec<Ev>| {
        for leaf in killed {
            rec.drop_killed.retain(|&l| l != leaf);
            evs.push(Ev::DropPanic(leaf));
        }
    };
    match first {
        Some((f, mut evs)) => {
            let again = pass(f, env, rec);
            // The failure must recur when the group is killed at its instant. It does not
            // when it hangs on other events of that instant (a zero-length task started from
            // the queue then, a background task aborted at a completion then): a tie the
            // oracle does not order, so the program is checked as inexact.
            if again.first.as_ref().map(|x| x.0) != Some(f) {
                rec.ambiguous = true;
            }
            if claims {
                claim(again.killed_panicky, rec, &mut evs);
            }
            Out {
                end: f,
                res: Res::Fail(evs),
            }
        }
        None => {
            let last = pass(kill.min(cut), env, rec);
            match last.done {
                Some(done) if last.completion_panics.is_empty() => Out {
                    end: done,
                    res: Res::Ok,
                },
                Some(done) => {
                    let mut evs = Vec::new();
                    claim(last.completion_panics, rec, &mut evs);
                    Out {
                        end: done,
                        res: Res::Fail(evs),
                    }
                }
                None if cut <= kill => {
                    let mut evs = vec![Ev::Cut(id)];
                    if claims {
                        claim(last.killed_panicky, rec, &mut evs);
                    }
                    Out {
                        end: cut,
                        res: Res::Fail(evs),
                    }
                }
                None => Out {
                    end: kill,
                    res: Res::Killed,
                },
            }
        }
    }
}

fn group_pass(
    start: u64,
    kill: u64,
    limit: Option<usize>,
    normal: &[Node],
    background: &[Node],
    body: Option<&Node>,
    abort_at: &[u64],
    dropped_queue: u64,
    env: &mut Vec<Timeline>,
    rec: &mut Rec,
) -> Pass {
    let mut fails: Vec<(u64, Vec<Ev>)> = Vec::new();
    let mut killed_panicky = Vec::new();
    let mut completion_panics = Vec::new();
    let mut all_ok = true;
    let mut done = start;
    let mut account = |o: Out| match o.res {
        Res::Ok => done = done.max(o.end),
        Res::Fail(evs) => fails.push((o.end, evs)),
        Res::Killed => all_ok = false,
    };
    if let Some(b) = body {
        account(sim(b, start, kill, env, rec));
    }
    // Slots free at these times; a queued task starts when the earliest frees, unless the group
    // is killed (failed) by then.
    let mut slots = BinaryHeap::new();
    for (i, c) in normal.iter().enumerate() {
        let abort = abort_at[i];
        let at = match limit {
            Some(l) if i >= l => {
                let &Reverse(t) = slots.peek().expect("a slot per running task");
                // Dropped from the queue (aborted, or by the shutdown request) before a slot
                // frees for it: never starts, takes no slot, is no failure.
                let dropped = abort.min(dropped_queue);
                if dropped < t && dropped < kill {
                    continue;
                }
                if t >= kill {
                    all_ok = false;
                    break;
                }
                if dropped == t {
                    rec.ambiguous = true; // the drop races the slot
                }
                slots.pop();
                t
            }
            _ => start,
        };
        let o = sim(c, at, kill.min(abort), env, rec);
        let panicky = match *c {
            Node::Leaf {
                id,
                panic_on_drop: true,
                ..
            } if at < kill.min(abort) => Some(id),
            _ => None,
        };
        match o.res {
            // Aborted through its handle while it panics when dropped: a failure then.
            // (At `kill` itself too: an end at `kill` counts as ending first.)
            Res::Killed if abort <= kill && panicky.is_some() => {
                let leaf = panicky.unwrap();
                rec.drop_killed.retain(|&l| l != leaf);
                slots.push(Reverse(abort));
                account(Out {
                    end: abort,
                    res: Res::Fail(vec![Ev::DropPanic(leaf)]),
                });
            }
            Res::Killed if panicky.is_some() => {
                killed_panicky.push(panicky.unwrap());
                slots.push(Reverse(o.end));
                account(o);
            }
            // Aborted through its handle: ended, neither a success nor a failure.
            Res::Killed if abort <= kill => {
                slots.push(Reverse(abort));
                account(Out {
                    end: abort,
                    res: Res::Ok,
                });
            }
            _ => {
                slots.push(Reverse(o.end));
                account(o);
            }
        }
    }
    let normal_done = (all_ok && fails.is_empty()).then_some(done);
    let bg_kill = normal_done.map_or(kill, |d| d.min(kill));
    for b in background {
        let o = sim(b, start, bg_kill, env, rec);
        match (o.res, b) {
            (Res::Fail(evs), _) => fails.push((o.end, evs)),
            (
                Res::Killed,
                &Node::Leaf {
                    id,
                    panic_on_drop: true,
                    ..
                },
            ) if start < bg_kill => {
                if normal_done.is_some_and(|d| d <= kill) {
                    // Aborted when the group completed: its destructor's panic fails the group
                    // (then, not earlier: it is no failure that cancels the others).
                    completion_panics.push(id);
                } else {
                    killed_panicky.push(id);
                }
            }
            _ => {}
        }
    }
    fails.sort_by_key(|f| f.0);
    Pass {
        first: fails.into_iter().next(),
        done: normal_done,
        killed_panicky,
        completion_panics,
    }
}

// ---------------------------------------------------------------------------------------------
// The interpreter

type BoxFut = Pin<Box<dyn Future<Output = Result<(), Vec<Ev>>> + Send>>;

/// Everything a run records.
struct Ctx {
    base: Instant,
    tick: Duration,
    capture: bool,
    made: Vec<AtomicU32>,
    dropped: Vec<AtomicU32>,
    starts: Mutex<BTreeMap<u32, (u64, Option<u64>)>>,
    ends: Mutex<BTreeMap<u32, Option<u64>>>,
    violations: Mutex<Vec<String>>,
    /// Tasks spawned with `tokio::spawn` that act on the program from outside (cancel, move a
    /// deadline, abort a handle, request a shutdown); aborted and awaited after the run.
    helpers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Tasks of `MovedOut` nodes dropped before their leaf ended (aborted).
    detached: Mutex<Vec<tokio::task::JoinHandle<Result<(), Vec<Ev>>>>>,
}

impl Ctx {
    fn new(nodes: u32, tick: Duration, capture: bool) -> Arc<Ctx> {
        Arc::new(Ctx {
            base: Instant::now(),
            tick,
            capture,
            made: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
            dropped: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
            starts: Mutex::default(),
            ends: Mutex::default(),
            violations: Mutex::default(),
            helpers: Mutex::default(),
            detached: Mutex::default(),
        })
    }

    fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.tick.as_nanos()) as u64
    }

    fn now(&self) -> u64 {
        self.ticks(Instant::now() - self.base)
    }

    fn deadline(&self) -> Option<u64> {
        current_effective_deadline().map(|d| self.ticks(d.saturating_duration_since(self.base)))
    }

    /// Runs `f` in a task of its own, outside the program.
    fn helper(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.helpers.lock().unwrap().push(tokio::spawn(f));
    }

    fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }

    /// Turns a group's error into the failures it holds; a cancellation reported as an error
    /// is a violation.
    fn flatten(&self, id: u32, e: GroupError<Vec<Ev>>) -> Vec<Ev> {
        if e.is_cancelled() {
            self.violation(format!("#{id}: GroupError says cancelled: {e:?}"));
        }
        if e.failures().is_empty() {
            self.violation(format!("#{id}: GroupError without failures"));
        }
        self.failures(id, e)
    }

    /// The failures a group's error holds.
    fn failures(&self, id: u32, e: GroupError<Vec<Ev>>) -> Vec<Ev> {
        let mut evs = Vec::new();
        for f in e.into_failures() {
            if f.is_panic() {
                let payload = f.into_panic().unwrap();
                match payload
                    .downcast::<LeafPanic>()
                    .map(|p| Ev::Panic(p.0))
                    .or_else(|p| p.downcast::<LeafDropPanic>().map(|p| Ev::DropPanic(p.0)))
                {
                    Ok(ev) => evs.push(ev),
                    Err(other) => {
                        let msg = panic_message(&*other);
                        self.violation(format!("#{id}: foreign panic captured: {msg}"));
                    }
                }
            } else {
                evs.extend(f.into_error().unwrap());
            }
        }
        evs
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(l) = p.downcast_ref::<LeafPanic>() {
        format!("{l:?}")
    } else if let Some(l) = p.downcast_ref::<LeafDropPanic>() {
        format!("{l:?}")
    } else {
        "<non-string payload>".into()
    }
}

/// Counts the construction and the drop of one node's future.
struct Tracker {
    ctx: Arc<Ctx>,
    id: u32,
}

impl Tracker {
    fn new(ctx: &Arc<Ctx>, id: u32) -> Tracker {
        ctx.made[id as usize].fetch_add(1, Ordering::SeqCst);
        Tracker {
            ctx: ctx.clone(),
            id,
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.ctx.dropped[self.id as usize].fetch_add(1, Ordering::SeqCst);
    }
}

/// Aborts a `MovedOut` node's task when the node is dropped first, and hands it to the run to
/// reap.
struct Detached {
    handle: Option<tokio::task::JoinHandle<Result<(), Vec<Ev>>>>,
    ctx: Arc<Ctx>,
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
            self.ctx.detached.lock().unwrap().push(h);
        }
    }
}

/// A gather's input, built lazily: an item's future exists once the gather pulls it.
struct Items {
    items: std::vec::IntoIter<Node>,
    ctx: Arc<Ctx>,
}

impl Iterator for Items {
    type Item = BoxFut;
    fn next(&mut self) -> Option<BoxFut> {
        self.items.next().map(|n| build(&n, &self.ctx))
    }
}

fn build(node: &Node, ctx: &Arc<Ctx>) -> BoxFut {
    let tracker = Tracker::new(ctx, node.id());
    let ctx = ctx.clone();
    match node.clone() {
        Node::Leaf {
            id,
            outcome,
            dur,
            yields,
            spin,
            panic_on_drop,
        } => Box::pin(async move {
            let _t = tracker;
            let now = ctx.now();
            ctx.starts.lock().unwrap().insert(id, (now, ctx.deadline()));
            let mut bomb = Bomb {
                id,
                armed: panic_on_drop,
            };
            sleep(ctx.tick * dur as u32).await;
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            match spin {
                None => {}
                Some(Spin::Repeat(n)) => {
                    use tokio::io::AsyncReadExt;
                    let mut zeros = tokio::io::repeat(0);
                    let mut byte = [1u8];
                    for _ in 0..n {
                        assert_eq!(zeros.read(&mut byte).await.unwrap(), 1);
                    }
                }
                Some(Spin::Channel(n)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(n as usize);
                    for i in 0..n {
                        tx.try_send(i).unwrap();
                    }
                    for i in 0..n {
                        assert_eq!(rx.recv().await, Some(i));
                    }
                }
            }
            ctx.ends.lock().unwrap().insert(id, ctx.deadline());
            bomb.armed = false;
            match outcome {
                Outcome::Ok => Ok(()),
                Outcome::Err => Err(vec![Ev::Err(id)]),
                Outcome::Panic => std::panic::panic_any(LeafPanic(id)),
            }
        }),
        Node::Group {
            id,
            limit,
            children,
            background,
            body,
            aborts,
            shutdown,
        } => Box::pin(async move {
            let _t = tracker;
            let start = Instant::now();
            let tick = ctx.tick;
            let mut builder = TaskGroup::builder();
            if let Some(l) = limit {
                builder = builder.concurrency_limit(l);
            }
            if ctx.capture {
                builder = builder.capture_panics();
            }
            let c = ctx.clone();
            let out = builder
                .scope(|tg| async move {
                    for b in &background {
                        tg.spawn_background(build(b, &c));
                    }
                    let mut to_abort = Vec::new();
                    for (i, n) in children.iter().enumerate() {
                        let h = tg.spawn(build(n, &c));
                        if let Some(&(_, t)) = aborts.iter().find(|a| a.0 == i) {
                            to_abort.push((t, h));
                        }
                    }
                    if !to_abort.is_empty() {
                        to_abort.sort_by_key(|a| a.0);
                        c.helper(async move {
                            for (t, h) in to_abort {
                                sleep_until(start + tick * t as u32).await;
                                h.abort();
                            }
                        });
                    }
                    if let Some((t, grace)) = shutdown {
                        let tg = tg.clone();
                        c.helper(async move {
                            sleep_until(start + tick * t as u32).await;
                            tg.request_shutdown(tick * grace as u32);
                        });
                    }
                    if let Some(b) = body {
                        build(&b, &c).await?;
                    }
                    Ok(())
                })
                .await;
            out.map_err(|e| {
                if shutdown.is_some() && e.is_cancelled() {
                    // Cut off at the end of the grace, with the failures recorded before (in
                    // real time a failure can race the cut; on the paused clock the oracle
                    // says which).
                    let mut evs = vec![Ev::Cut(id)];
                    evs.extend(ctx.failures(id, e));
                    evs
                } else {
                    ctx.flatten(id, e)
                }
            })
        }),
        Node::Scope {
            id,
            kind,
            timeout,
            cancel_at,
            move_deadline,
            remote,
            body,
        } => Box::pin(async move {
            let _t = tracker;
            let start = Instant::now();
            let scope = match timeout {
                Some(t) => CancelScope::with_timeout(ctx.tick * t as u32),
                None => CancelScope::new(),
            };
            let handle = scope.clone();
            let tick = ctx.tick;
            // The canceller and the mover run inside the scope, beside the body.
            let helper = async move {
                let mut acts: Vec<(u64, Option<Option<u64>>)> = Vec::new();
                if let Some(c) = cancel_at {
                    acts.push((c, None));
                }
                if let Some((t, d)) = move_deadline {
                    acts.push((t, Some(d)));
                }
                acts.sort_by_key(|a| a.0);
                for (t, act) in acts {
                    sleep_until(start + tick * t as u32).await;
                    match act {
                        None => handle.cancel(),
                        Some(d) => handle.set_deadline(d.map(|d| start + tick * d as u32)),
                    }
                }
                pending::<()>().await
            };
            let c = ctx.clone();
            let inner: BoxFut = if remote {
                ctx.helper(helper);
                build(&body, &c)
            } else {
                Box::pin(async move {
                    let body = build(&body, &c);
                    tokio::select! {
                        biased;
                        r = body => r,
                        () = helper => unreachable!(),
                    }
                })
            };
            match kind {
                ScopeKind::MoveOn => scope.move_on(inner).await.unwrap_or(Ok(())),
                ScopeKind::Fail => match scope.fail(inner).await {
                    Ok(r) => r,
                    Err(e) => {
                        if e.is_cancel_called() == e.is_deadline_reached() {
                            ctx.violation(format!("#{id}: Cancelled neither or both: {e:?}"));
                        }
                        if !scope.cancelled_caught() {
                            ctx.violation(format!(
                                "#{id}: Err(Cancelled) but not cancelled_caught"
                            ));
                        }
                        Err(vec![Ev::Cancelled {
                            scope: id,
                            by_cancel: e.is_cancel_called(),
                        }])
                    }
                },
            }
        }),
        Node::Gather { id, limit, items } => Box::pin(async move {
            let _t = tracker;
            let c = ctx.clone();
            let mut g = Gather::new(Items {
                items: items.into_iter(),
                ctx: c,
            });
            if let Some(l) = limit {
                g = g.concurrency_limit(l);
            }
            g.await.map(drop).map_err(|e| ctx.flatten(id, e))
        }),
        Node::Moved { id, body } => Box::pin(async move {
            let _t = tracker;
            let mut fut = build(&body, &ctx);
            if let std::task::Poll::Ready(r) = futures::poll!(fut.as_mut()) {
                return r;
            }
            let mut builder = TaskGroup::builder();
            if ctx.capture {
                builder = builder.capture_panics();
            }
            builder
                .scope(|tg| async move {
                    tg.spawn(fut);
                    Ok(())
                })
                .await
                .map_err(|e| ctx.flatten(id, e))
        }),
        Node::MovedOut { id, body } => Box::pin(async move {
            let _t = tracker;
            let mut fut = build(&body, &ctx);
            if let std::task::Poll::Ready(r) = futures::poll!(fut.as_mut()) {
                return r;
            }
            let mut task = Detached {
                handle: Some(tokio::spawn(fut)),
                ctx: ctx.clone(),
            };
            let res = task.handle.as_mut().unwrap().await;
            task.handle = None;
            match res {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    ctx.violation(format!("#{id}: the moved leaf's task was cancelled: {e:?}"));
                    Ok(())
                }
            }
        }),
        Node::Reawait { ticks, body, .. } => Box::pin(async move {
            let _t = tracker;
            let mut fut = build(&body, &ctx);
            match quattro::move_on_after(ctx.tick * ticks as u32, &mut fut).await {
                Some(r) => r,
                None => fut.await,
            }
        }),
        Node::DropAfter { ticks, body, .. } => Box::pin(async move {
            let _t = tracker;
            let at = Instant::now() + ctx.tick * ticks as u32;
            let body = build(&body, &ctx);
            tokio::select! {
                biased;
                r = body => r,
                () = sleep_until(at) => Ok(()),
            }
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Running and checking

/// What the outermost future gave.
#[derive(Debug, PartialEq)]
enum Top {
    Ok,
    Err(Vec<Ev>),
    /// A panic reached the top (only without `capture_panics`).
    Panic(Ev),
    Hang,
}

fn quiet_leaf_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            if p.downcast_ref::<LeafPanic>().is_none()
                && p.downcast_ref::<LeafDropPanic>().is_none()
            {
                default(info);
            }
        }));
    });
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Current-thread runtime, paused clock, panics captured.
    Paused,
    /// Current-thread runtime, paused clock, panics resumed.
    PausedNoCapture,
    /// Multi-thread runtime, real time.
    MultiThread,
}

/// Runs one program and checks it against the oracle; `Err` describes every violation.
async fn run_case(p: &Program, mode: Mode) -> Result<(), String> {
    let real = mode == Mode::MultiThread;
    let tick = if real {
        Duration::from_micros(10)
    } else {
        Duration::from_millis(1)
    };
    let ctx = Ctx::new(p.nodes, tick, mode != Mode::PausedNoCapture);
    let root = build(&p.root, &ctx);
    // A hang: in paused time the clock jumps to the timeout; in real time it is a few seconds.
    let limit = if real {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(3600)
    };
    let top = match tokio::time::timeout(limit, AssertUnwindSafe(root).catch_unwind()).await {
        Err(_) => Top::Hang,
        Ok(Ok(Ok(()))) => Top::Ok,
        Ok(Ok(Err(evs))) => Top::Err(evs),
        Ok(Err(payload)) => match payload
            .downcast::<LeafPanic>()
            .map(|p| Ev::Panic(p.0))
            .or_else(|p| p.downcast::<LeafDropPanic>().map(|p| Ev::DropPanic(p.0)))
        {
            Ok(ev) => Top::Panic(ev),
            Err(other) => return Err(format!("foreign panic: {}", panic_message(&*other))),
        },
    };
    let end = ctx.now();
    let mut bad: Vec<String> = std::mem::take(&mut *ctx.violations.lock().unwrap());
    // Before anything is reaped: the drop counts of every node not in a detached task.
    let counts: Vec<(u32, u32)> = (0..p.nodes as usize)
        .map(|i| {
            (
                ctx.made[i].load(Ordering::SeqCst),
                ctx.dropped[i].load(Ordering::SeqCst),
            )
        })
        .collect();
    let mut detached_leaves = HashSet::new();
    p.root.visit(&mut |n| {
        if let Node::MovedOut { body, .. } = n {
            detached_leaves.insert(body.id() as usize);
        }
    });
    let detached = std::mem::take(&mut *ctx.detached.lock().unwrap());
    for h in detached {
        if let Err(e) = h.await {
            // A leaf's own panic means it ran to its end before its node was dropped (a race
            // in real time; on the paused clock the oracle's check of the leaf's end catches
            // it). Anything else is foreign.
            if e.is_panic() {
                let payload = e.into_panic();
                if payload.downcast_ref::<LeafPanic>().is_none() {
                    bad.push(format!(
                        "a detached leaf panicked when aborted: {}",
                        panic_message(&*payload)
                    ));
                }
            }
        }
    }
    // The helpers hold no node's future; they may still wait for a time after the end.
    let helpers = std::mem::take(&mut *ctx.helpers.lock().unwrap());
    for h in &helpers {
        h.abort();
    }
    for h in helpers {
        if let Err(e) = h.await {
            if e.is_panic() {
                bad.push(format!("a helper panicked: {e:?}"));
            }
        }
    }
    if top == Top::Hang {
        bad.push("HANG: the program did not finish".into());
    }
    // Every future made was dropped exactly once, before the outermost future returned (a
    // leaf in a detached task: once its task was reaped). On the multi-thread runtime, after
    // the helpers were reaped too (the group waits for a helper's `shutdown()` to drop its
    // queue, see `shutdown_from_another_thread_drops_the_queue_before_the_group_returns`; the
    // helpers' own futures end a little later).
    for (i, &before) in counts.iter().enumerate() {
        let (made, dropped) = if detached_leaves.contains(&i) || real {
            (
                ctx.made[i].load(Ordering::SeqCst),
                ctx.dropped[i].load(Ordering::SeqCst),
            )
        } else {
            before
        };
        if made > 1 || made != dropped {
            bad.push(format!(
                "#{i}: future made {made} times, dropped {dropped} times"
            ));
        }
    }
    // No task is alive in the runtime. On the multi-thread runtime a task's last reference can
    // be released by a worker just after its output was handed over: give it a moment.
    let mut alive = Handle::current().metrics().num_alive_tasks();
    if real {
        for _ in 0..2000 {
            if alive == 0 {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
            alive = Handle::current().metrics().num_alive_tasks();
        }
    }
    if alive != 0 {
        bad.push(format!(
            "{alive} tasks still alive after the outermost future returned"
        ));
    }
    // Every error that surfaced belongs to a leaf (or fail scope) that produces it, once.
    let mut kinds = BTreeMap::new();
    p.root.visit(&mut |n| {
        kinds.insert(n.id(), n.clone());
    });
    let surfaced: Vec<Ev> = match &top {
        Top::Err(evs) => evs.clone(),
        Top::Panic(ev) => vec![ev.clone()],
        _ => vec![],
    };
    let mut seen = HashSet::new();
    for ev in &surfaced {
        if !seen.insert(ev.clone()) {
            bad.push(format!("{ev:?} surfaced twice"));
        }
        let ok = match *ev {
            Ev::Err(id) => matches!(
                kinds.get(&id),
                Some(Node::Leaf {
                    outcome: Outcome::Err,
                    ..
                })
            ),
            Ev::Panic(id) => {
                matches!(
                    kinds.get(&id),
                    Some(Node::Leaf {
                        outcome: Outcome::Panic,
                        ..
                    })
                )
            }
            Ev::Cancelled { scope, .. } => matches!(
                kinds.get(&scope),
                Some(Node::Scope {
                    kind: ScopeKind::Fail,
                    ..
                })
            ),
            Ev::DropPanic(id) => matches!(
                kinds.get(&id),
                Some(Node::Leaf {
                    panic_on_drop: true,
                    ..
                })
            ),
            Ev::Cut(group) => matches!(
                kinds.get(&group),
                Some(Node::Group {
                    shutdown: Some(_),
                    ..
                })
            ),
        };
        if !ok {
            bad.push(format!("{ev:?} surfaced but no such failure exists"));
        }
    }
    if mode == Mode::Paused && matches!(top, Top::Panic(_)) {
        bad.push("a panic escaped capture_panics".into());
    }

    let pred = oracle(p);
    STATS.record(&top, pred.exact && !real, p);
    if !real && pred.exact {
        let expected = match &pred.out.res {
            Res::Ok => Top::Ok,
            Res::Fail(evs) if mode == Mode::PausedNoCapture => {
                match evs
                    .iter()
                    .find(|e| matches!(e, Ev::Panic(_) | Ev::DropPanic(_)))
                {
                    Some(panic) => Top::Panic(panic.clone()),
                    None => Top::Err(evs.clone()),
                }
            }
            Res::Fail(evs) => Top::Err(evs.clone()),
            Res::Killed => unreachable!("nothing kills the root"),
        };
        // Failures recorded at one instant (an error and the destructor panics it causes)
        // may come in any order.
        let sorted = |t: &Top| match t {
            Top::Err(evs) => {
                let mut evs = evs.clone();
                evs.sort();
                Top::Err(evs)
            }
            Top::Ok => Top::Ok,
            Top::Panic(ev) => Top::Panic(ev.clone()),
            Top::Hang => Top::Hang,
        };
        // Without capture, of several destructor panics recorded at one instant (in the order
        // the tasks are aborted) any may be the one resumed.
        let drop_panic_race = match (&top, &pred.out.res, &expected) {
            (Top::Panic(Ev::DropPanic(got)), Res::Fail(evs), Top::Panic(Ev::DropPanic(_))) => {
                evs.contains(&Ev::DropPanic(*got))
            }
            _ => false,
        };
        if sorted(&top) != sorted(&expected) && !drop_panic_race {
            bad.push(format!("outcome {top:?}, expected {expected:?}"));
        }
        if top != Top::Hang && end != pred.out.end {
            bad.push(format!("ended at {end}, expected {}", pred.out.end));
        }
        let starts = ctx.starts.lock().unwrap().clone();
        let ends = ctx.ends.lock().unwrap().clone();
        p.root.visit(&mut |n| {
            let Node::Leaf { id, .. } = *n else { return };
            let got = starts.get(&id).copied();
            match pred.starts.get(&id) {
                Some(Start::Unknown) => {}
                Some(&Start::At(t, d)) if got != Some((t, d)) => bad.push(format!(
                    "#{id}: started (tick, deadline) {got:?}, expected {:?}",
                    (t, d)
                )),
                None if got.is_some() => {
                    bad.push(format!("#{id}: started {got:?}, expected never"))
                }
                _ => {}
            }
            let got = ends.get(&id).copied();
            let want = pred.ends.get(&id).copied();
            if got != want && pred.starts.get(&id) != Some(&Start::Unknown) {
                bad.push(format!(
                    "#{id}: reached its end seeing deadline {got:?}, expected {want:?} \
                     (None = not reached)"
                ));
            }
        });
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n(oracle: exact {}, {:?})",
            bad.join("\n"),
            pred.exact,
            pred.out
        ))
    }
}

/// What the generated programs did, printed after each property (`--nocapture` shows it).
struct Stats {
    cases: AtomicU32,
    exact: AtomicU32,
    ok: AtomicU32,
    err: AtomicU32,
    panic: AtomicU32,
    elapsed: AtomicU32,
    nodes: AtomicU32,
    /// Programs with: a coop-budget leaf, a remote scope, a moved future, an abort, a shutdown,
    /// a leaf that panics when dropped.
    knobs: [AtomicU32; 7],
    cut: AtomicU32,
}

static STATS: Stats = Stats {
    cases: AtomicU32::new(0),
    exact: AtomicU32::new(0),
    ok: AtomicU32::new(0),
    err: AtomicU32::new(0),
    panic: AtomicU32::new(0),
    elapsed: AtomicU32::new(0),
    nodes: AtomicU32::new(0),
    knobs: [const { AtomicU32::new(0) }; 7],
    cut: AtomicU32::new(0),
};

impl Stats {
    fn record(&self, top: &Top, exact: bool, p: &Program) {
        let bump = |c: &AtomicU32| c.fetch_add(1, Ordering::Relaxed);
        bump(&self.cases);
        self.nodes.fetch_add(p.nodes, Ordering::Relaxed);
        if exact {
            bump(&self.exact);
        }
        let mut has = [false; 7];
        p.root.visit(&mut |n| match n {
            Node::Leaf {
                spin,
                panic_on_drop,
                ..
            } => {
                has[0] |= spin.is_some();
                has[5] |= *panic_on_drop;
            }
            Node::Scope { remote: true, .. } => has[1] = true,
            Node::Moved { .. } | Node::MovedOut { .. } => has[2] = true,
            Node::Reawait { .. } => has[6] = true,
            Node::Group {
                aborts, shutdown, ..
            } => {
                has[3] |= !aborts.is_empty();
                has[4] |= shutdown.is_some();
            }
            _ => {}
        });
        for (k, h) in self.knobs.iter().zip(has) {
            if h {
                bump(k);
            }
        }
        if let Top::Err(evs) = top {
            if evs.iter().any(|e| matches!(e, Ev::Cut(_))) {
                bump(&self.cut);
            }
        }
        match top {
            Top::Ok => bump(&self.ok),
            Top::Err(evs) if evs.iter().any(|e| matches!(e, Ev::Cancelled { .. })) => {
                bump(&self.elapsed)
            }
            Top::Err(evs)
                if evs
                    .iter()
                    .any(|e| matches!(e, Ev::Panic(_) | Ev::DropPanic(_))) =>
            {
                bump(&self.panic)
            }
            Top::Err(_) => bump(&self.err),
            Top::Panic(_) => bump(&self.panic),
            Top::Hang => 0,
        };
    }

    fn print(&self, what: &str) {
        let get = |c: &AtomicU32| c.load(Ordering::Relaxed);
        eprintln!(
            "{what}: {} runs (all properties so far), {} checked exactly, {} nodes; top: {} ok, \
             {} leaf errors, {} panics, {} fail-scope elapsed, {} cut by a shutdown's grace; \
             programs with a coop-budget leaf {}, a remote cancel/move {}, a moved future {}, \
             a handle abort {}, a shutdown {}, a leaf that panics when dropped {}, a future re-awaited after its scope ended {}",
            get(&self.cases),
            get(&self.exact),
            get(&self.nodes),
            get(&self.ok),
            get(&self.err),
            get(&self.panic),
            get(&self.elapsed),
            get(&self.cut),
            get(&self.knobs[0]),
            get(&self.knobs[1]),
            get(&self.knobs[2]),
            get(&self.knobs[3]),
            get(&self.knobs[4]),
            get(&self.knobs[5]),
            get(&self.knobs[6]),
        );
    }
}

fn paused_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The case count: `default`, scaled by `PROPTEST_CASES / 1000` when that is set.
fn cases(default: u32) -> u32 {
    match std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) => ((default as u64 * n) / 1000).max(1) as u32,
        None => default,
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Relative to the working directory, which `cargo test` sets to this package's root
        // (`proptests/`), wherever it is run from.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/proptest_tree.txt",
        ))),
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

fn check(name: &str, mut runner: TestRunner, run: impl Fn(&Program) -> Result<(), String>) {
    quiet_leaf_panics();
    let result = runner.run(&programs(), |p| {
        run(&p).map_err(|e| TestCaseError::fail(format!("{e}\nprogram: {p:?}")))
    });
    STATS.print(name);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, p)) => panic!("minimal failing program {p:?}\n{why}"),
        Err(e) => panic!("{e}"),
    }
}

/// Exact checks on the paused clock, panics captured by every group.
#[test]
fn paused_programs() {
    let runner = TestRunner::new(config(cases(6000)));
    check("paused", runner, |p| {
        paused_runtime().block_on(run_case(p, Mode::Paused))
    });
}

/// Without `capture_panics`, a panicking leaf's panic is resumed exactly once at the top.
#[test]
fn paused_programs_panics_resumed() {
    let runner = TestRunner::new(config(cases(2000)));
    check("paused, panics resumed", runner, |p| {
        paused_runtime().block_on(run_case(p, Mode::PausedNoCapture))
    });
}

/// Timing-independent checks on the multi-thread runtime in real time.
#[test]
fn multi_thread_programs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runner = TestRunner::new(config(cases(2000)));
    check("multi-thread", runner, |p| {
        rt.block_on(run_case(p, Mode::MultiThread))
    });
}

/// The oracle itself, on hand-written programs.
#[test]
fn oracle_examples() {
    let leaf = |outcome, dur| Node::Leaf {
        id: 0,
        outcome,
        dur,
        yields: 0,
        spin: None,
        panic_on_drop: false,
    };
    // A failure at 5 cancels a sibling due at 10; a queued task never starts.
    let p = program(Node::Group {
        id: 0,
        limit: Some(2),
        children: vec![
            leaf(Outcome::Err, 5),
            leaf(Outcome::Ok, 10),
            leaf(Outcome::Ok, 1),
        ],
        background: vec![],
        body: None,
        aborts: vec![],
        shutdown: None,
    });
    let pred = oracle(&p);
    assert!(pred.exact);
    assert_eq!(pred.out.end, 5);
    assert_eq!(pred.out.res, Res::Fail(vec![Ev::Err(1)]));
    assert!(!pred.starts.contains_key(&3));
    // A move_on scope with timeout 7 around a 10-tick leaf: ends at 7, Ok; deadline moved to
    // 20 at 3: ends at 10.
    let p = program(Node::Group {
        id: 0,
        limit: None,
        children: vec![Node::Scope {
            id: 0,
            kind: ScopeKind::Fail,
            timeout: Some(7),
            cancel_at: None,
            move_deadline: Some((3, Some(20))),
            remote: false,
            body: Box::new(leaf(Outcome::Ok, 10)),
        }],
        background: vec![],
        body: None,
        aborts: vec![],
        shutdown: None,
    });
    let pred = oracle(&p);
    assert_eq!((pred.out.end, pred.out.res), (10, Res::Ok));
    assert_eq!(pred.starts[&2], Start::At(0, Some(7)));
    assert_eq!(pred.ends[&2], Some(20));
}

/// The new knobs (issue 17) on hand-written programs: the oracle's prediction, and the run
/// agreeing with it exactly on the paused clock.
#[test]
fn knob_examples_run_as_predicted() {
    let leaf = |outcome, dur| Node::Leaf {
        id: 0,
        outcome,
        dur,
        yields: 0,
        spin: None,
        panic_on_drop: false,
    };
    let group = |limit, children: Vec<Node>, aborts, shutdown| Node::Group {
        id: 0,
        limit,
        children,
        background: vec![],
        body: None,
        aborts,
        shutdown,
    };
    let bomb = |dur| Node::Leaf {
        id: 0,
        outcome: Outcome::Ok,
        dur,
        yields: 0,
        spin: None,
        panic_on_drop: true,
    };
    let cases = [
        // A task whose destructor panics, aborted by the group's failure at 5: recorded after
        // the error.
        (
            group(None, vec![bomb(10), leaf(Outcome::Err, 5)], vec![], None),
            5,
            Res::Fail(vec![Ev::Err(2), Ev::DropPanic(1)]),
        ),
        // The same task aborted through its handle at 3: the group fails then.
        (
            group(
                None,
                vec![bomb(10), leaf(Outcome::Ok, 5)],
                vec![(0, 3)],
                None,
            ),
            3,
            Res::Fail(vec![Ev::DropPanic(1)]),
        ),
        // Cut off by the grace at 8: the cut, then the destructor's panic.
        (
            group(None, vec![bomb(10)], vec![], Some((5, 3))),
            8,
            Res::Fail(vec![Ev::Cut(0), Ev::DropPanic(1)]),
        ),
        // Shutdown at 5 with grace 20: the running task finishes at 10, the queued one is
        // dropped at the request; the group succeeds.
        (
            group(
                Some(1),
                vec![leaf(Outcome::Ok, 10), leaf(Outcome::Err, 1)],
                vec![],
                Some((5, 20)),
            ),
            10,
            Res::Ok,
        ),
        // Grace 3: cut off at 8.
        (
            group(
                Some(1),
                vec![leaf(Outcome::Ok, 10), leaf(Outcome::Err, 1)],
                vec![],
                Some((5, 3)),
            ),
            8,
            Res::Fail(vec![Ev::Cut(0)]),
        ),
        // Grace 0: a hard cancel at the request.
        (
            group(None, vec![leaf(Outcome::Ok, 10)], vec![], Some((5, 0))),
            5,
            Res::Fail(vec![Ev::Cut(0)]),
        ),
        // The queued failing task is aborted at 3, before it starts.
        (
            group(
                Some(1),
                vec![leaf(Outcome::Ok, 10), leaf(Outcome::Err, 1)],
                vec![(1, 3)],
                None,
            ),
            10,
            Res::Ok,
        ),
        // The running task is aborted at 4: the queued one starts then, and fails at 5.
        (
            group(
                Some(1),
                vec![leaf(Outcome::Ok, 10), leaf(Outcome::Err, 1)],
                vec![(0, 4)],
                None,
            ),
            5,
            Res::Fail(vec![Ev::Err(2)]),
        ),
        // A moved future in a remote-cancelled fail scope, around a coop-budget leaf.
        (
            group(
                None,
                vec![Node::Scope {
                    id: 0,
                    kind: ScopeKind::Fail,
                    timeout: Some(50),
                    cancel_at: Some(7),
                    move_deadline: Some((2, Some(30))),
                    remote: true,
                    body: Box::new(Node::Moved {
                        id: 0,
                        body: Box::new(Node::Leaf {
                            id: 0,
                            outcome: Outcome::Ok,
                            dur: 5,
                            yields: 1,
                            spin: Some(Spin::Channel(300)),
                            panic_on_drop: false,
                        }),
                    }),
                }],
                vec![],
                None,
            ),
            5,
            Res::Ok,
        ),
    ];
    let reawait = |body| Node::Reawait {
        id: 0,
        ticks: 3,
        body: Box::new(body),
    };
    let cases = cases.into_iter().chain([
        // Re-awaited after its 3-tick scope ended: a task of the group sees the deadline at
        // its start and none at its end, as does a task of a group in the group's body.
        (
            group(
                None,
                vec![reawait(group(
                    None,
                    vec![leaf(Outcome::Ok, 5)],
                    vec![],
                    None,
                ))],
                vec![],
                None,
            ),
            5,
            Res::Ok,
        ),
        (
            group(
                None,
                vec![reawait(Node::Group {
                    id: 0,
                    limit: None,
                    children: vec![],
                    background: vec![],
                    body: Some(Box::new(group(
                        None,
                        vec![leaf(Outcome::Ok, 5)],
                        vec![],
                        None,
                    ))),
                    aborts: vec![],
                    shutdown: None,
                })],
                vec![],
                None,
            ),
            5,
            Res::Ok,
        ),
    ]);
    for (root, end, res) in cases {
        let p = program(root);
        let pred = oracle(&p);
        assert!(pred.exact, "{p:?}");
        assert_eq!((pred.out.end, &pred.out.res), (end, &res), "{p:?}");
        quiet_leaf_panics();
        paused_runtime()
            .block_on(run_case(&p, Mode::Paused))
            .unwrap_or_else(|e| panic!("{p:?}\n{e}"));
    }
}

/// Found by the generator (`Reawait` around two levels of groups). A group polled once inside
/// a 1 ms `move_on_after` (holding it by `&mut`) and re-awaited after that scope ended: a task
/// of a group nested in one of its tasks still reads the dead scope's expired deadline at 2 ms
/// (and `propagate::header_value()` would send `0n`), although no scope encloses it any more.
/// The nested group's publication is refreshed only when its own future is polled again, and
/// nothing wakes it when the enclosing context changes. A task of the re-awaited group itself
/// (one level) sees `None`, as the frame's docs promise ("never a stale one").
#[test]
fn reawaited_group_nested_task_sees_no_stale_deadline() {
    paused_runtime().block_on(async {
        let ms = Duration::from_millis;
        let mut fut = Box::pin(TaskGroup::scope(|outer| async move {
            let one_level = outer.spawn(async move {
                sleep(ms(2)).await;
                Ok::<_, ()>(current_effective_deadline())
            });
            let two_levels = outer.spawn(async move {
                TaskGroup::scope(|inner| async move {
                    let h = inner.spawn(async move {
                        sleep(ms(2)).await;
                        Ok::<_, ()>(current_effective_deadline())
                    });
                    Ok(h.await.unwrap())
                })
                .await
                .map_err(drop)
            });
            Ok((one_level.await.unwrap(), two_levels.await.unwrap()))
        }));
        let start = Instant::now();
        assert!(quattro::move_on_after(ms(1), &mut fut).await.is_none());
        let (one, two) = fut.await.unwrap();
        assert_eq!(start.elapsed(), ms(2));
        assert_eq!(one, None, "one level down");
        assert_eq!(two, None, "two levels down: the dead scope's deadline");
    });
}

/// Found by the generator (multi-thread runtime, `shutdown(0)` from another task on a group
/// with a queue). `TaskGroup::request_shutdown` takes the queue, cancels the group, and only then drops
/// the queued futures, in the caller's thread. The group can see itself cancelled with no task
/// left and return while the caller is still running those destructors: a future of the group
/// is dropped after the group returned (a guard it holds is released late). Here the queued
/// future's destructor takes 200 ms (it blocks), and the group returns before it ends.
#[test]
fn shutdown_from_another_thread_drops_the_queue_before_the_group_returns() {
    use std::sync::atomic::AtomicBool;
    struct SlowDrop(Arc<AtomicBool>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(200));
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let seen_at_return = rt.block_on(async move {
        let d2 = d.clone();
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                tg.spawn(pending::<Result<(), ()>>());
                let guard = SlowDrop(d2);
                tg.spawn(async move {
                    let _g = guard;
                    Ok(())
                });
                let tg2 = tg.clone();
                std::thread::spawn(move || tg2.request_shutdown(Duration::ZERO));
                Ok(())
            })
            .await;
        assert!(out.unwrap_err().is_cancelled());
        d.load(Ordering::SeqCst)
    });
    assert!(
        seen_at_return,
        "the group returned before its queued future's destructor ran to its end"
    );
    assert!(dropped.load(Ordering::SeqCst));
}
