//! The deadline chain: one [`Node`] for every running cancel scope and task group, linked to
//! the node that encloses it.
//!
//! The chain is what makes deadlines nest and flow. A scope reads its ancestors to decide
//! whether a cancellation is its own (the outer scope wins a tie), [`current_effective_deadline`]
//! takes the minimum along it, and a task group hands its children the group's node so that
//! their chain continues the one that encloses the group (Trio's rule).
//!
//! The current node lives in a thread-local that a scope or a group child *swaps* in for the
//! duration of one poll (and of the drop of the inner future) and swaps back out afterwards. This
//! is what `tokio::task_local!` does internally, minus the reference-count traffic: a task-local
//! `scope` consumes an owned value on every poll, which would cost an `Arc` clone per poll; moving
//! the `Arc` in and out of a `Cell` costs nothing.
//!
//! [`current_effective_deadline`]: crate::current_effective_deadline

use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::deadline::{self, NO_DEADLINE};

thread_local! {
    /// The innermost node of the future being polled on this thread, if any.
    static CURRENT: Cell<Option<Arc<Node>>> = const { Cell::new(None) };
}

/// Bumped whenever any deadline is moved or removed, so that a scope that leaned on an
/// ancestor's timer instead of arming its own notices the change with one load.
static DEADLINE_EPOCH: AtomicU64 = AtomicU64::new(0);

pub(crate) fn deadline_epoch() -> u64 {
    DEADLINE_EPOCH.load(Ordering::Acquire)
}

// State bits of a node.
/// `cancel()` was called.
pub(crate) const CANCEL_REQUESTED: u32 = 1 << 0;
/// The node's own deadline was observed to pass.
pub(crate) const DEADLINE_REACHED: u32 = 1 << 1;
/// The scope was entered (first poll). A second entry is a programming error.
pub(crate) const ENTERED: u32 = 1 << 2;
/// The scope or group finished; orphans handed to it are forwarded further up.
pub(crate) const FINISHED: u32 = 1 << 3;
/// The scope ended because of its own cancellation.
pub(crate) const CAUGHT: u32 = 1 << 4;
/// `set_deadline` was called; the owner must re-arm its timer.
pub(crate) const DEADLINE_CHANGED: u32 = 1 << 5;
/// Aborted tasks of dropped groups wait in `orphans` to be drained.
pub(crate) const HAS_ORPHANS: u32 = 1 << 6;
/// A `CancellationToken` was linked; the owner must start watching it.
pub(crate) const TOKENS_CHANGED: u32 = 1 << 7;
/// A graceful shutdown was requested for this node (see `crate::shutdown`).
pub(crate) const SHUTDOWN: u32 = 1 << 8;

/// Either kind of cancellation.
pub(crate) const CANCELLED: u32 = CANCEL_REQUESTED | DEADLINE_REACHED;

/// What a node stands for; groups mark the edge between two tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Scope,
    Group,
}

/// Something aborted that must be awaited until it is empty: in practice the tasks of a group
/// that was dropped, aborted then.
pub(crate) trait Orphan: Send {
    /// Polls until every task has ended (its future dropped).
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// One running cancel scope or task group.
pub(crate) struct Node {
    kind: Kind,
    /// Where the node runs; set once, when the scope is entered (unset: not entered).
    entered: OnceLock<Entered>,
    /// Deadline as encoded by [`deadline::encode`]; `NO_DEADLINE` when there is none.
    deadline: AtomicU64,
    /// Cache of the effective deadline along the chain from this node (encoded), valid while
    /// `effective_stamp` matches the current [`DEADLINE_EPOCH`]: deadlines deep in a chain are
    /// read on hot paths and change rarely.
    effective: AtomicU64,
    /// `(epoch + 1) << 1 | cancelled`, or 0 while invalid or being written.
    effective_stamp: AtomicU64,
    state: AtomicU32,
    /// The waker of the task that runs the node, for `cancel()` and `set_deadline()` from
    /// elsewhere.
    waker: Mutex<Option<Waker>>,
    orphans: Mutex<Vec<Box<dyn Orphan>>>,
    /// Tokens whose cancellation cancels this node, waiting to be picked up by its future.
    linked_tokens: Mutex<Vec<tokio_util::sync::CancellationToken>>,
    /// A token that fires when this node is cancelled, created on demand.
    token: OnceLock<tokio_util::sync::CancellationToken>,
    /// Shutdown tokens, created on demand (see `crate::shutdown`): `.0` fires on this node's
    /// own request, `.1` (a child of the parent's) on this node's or any enclosing request.
    pub(crate) shutdown: (
        OnceLock<tokio_util::sync::CancellationToken>,
        OnceLock<tokio_util::sync::CancellationToken>,
    ),
}

/// Where a node runs, fixed when it is entered. One once-cell for both: each `set` costs a
/// synchronised initialisation (even through `OnceLock::from`).
struct Entered {
    /// The node that encloses this one.
    parent: Option<Arc<Node>>,
    /// The task that runs the node (`None`: outside any task). A scope relies on an ancestor's
    /// timer only when that ancestor runs in the same task: a `LocalSet` task, for one, is
    /// polled inside the poll of whatever drives the set.
    task: Option<tokio::task::Id>,
}

impl Entered {
    fn here(parent: Option<Arc<Node>>) -> Entered {
        Entered {
            parent,
            task: tokio::task::try_id(),
        }
    }
}

impl Node {
    pub(crate) fn new(kind: Kind, deadline: u64) -> Node {
        Node {
            kind,
            entered: OnceLock::new(),
            deadline: AtomicU64::new(deadline),
            effective: AtomicU64::new(NO_DEADLINE),
            effective_stamp: AtomicU64::new(0),
            state: AtomicU32::new(0),
            waker: Mutex::new(None),
            orphans: Mutex::new(Vec::new()),
            linked_tokens: Mutex::new(Vec::new()),
            token: OnceLock::new(),
            shutdown: (OnceLock::new(), OnceLock::new()),
        }
    }

    /// A group node, already entered below `parent`.
    pub(crate) fn new_group(parent: Option<Arc<Node>>) -> Arc<Node> {
        let node = Node::new(Kind::Group, NO_DEADLINE);
        node.state.store(ENTERED, Ordering::Relaxed);
        let _ = node.entered.set(Entered::here(parent));
        Arc::new(node)
    }

    pub(crate) fn parent(&self) -> Option<&Arc<Node>> {
        self.entered.get().and_then(|e| e.parent.as_ref())
    }

    /// Marks the node as entered below `parent`.
    ///
    /// # Panics
    ///
    /// Panics if the node was entered before: a scope runs at most once.
    #[track_caller]
    pub(crate) fn enter(&self, parent: Option<Arc<Node>>) {
        let prev = self.state.fetch_or(ENTERED, Ordering::AcqRel);
        assert!(
            prev & ENTERED == 0,
            "CancelScope entered twice: a cancel scope can only be run once; \
             create a new CancelScope for every run"
        );
        let _ = self.entered.set(Entered::here(parent));
    }

    pub(crate) fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn set_flags(&self, flags: u32) -> u32 {
        self.state.fetch_or(flags, Ordering::AcqRel)
    }

    pub(crate) fn take_flags(&self, flags: u32) -> u32 {
        self.state.fetch_and(!flags, Ordering::AcqRel) & flags
    }

    pub(crate) fn deadline_raw(&self) -> u64 {
        self.deadline.load(Ordering::Acquire)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        deadline::decode(self.deadline_raw())
    }

    /// Stores a new deadline and tells the running future to re-arm its timer.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        self.deadline.store(
            deadline.map_or(NO_DEADLINE, deadline::encode),
            Ordering::Release,
        );
        DEADLINE_EPOCH.fetch_add(1, Ordering::AcqRel);
        let prev = self.set_flags(DEADLINE_CHANGED);
        if prev & ENTERED != 0 && prev & FINISHED == 0 {
            self.wake();
        }
    }

    /// Requests cancellation; idempotent.
    pub(crate) fn cancel(&self) {
        let prev = self.set_flags(CANCEL_REQUESTED);
        if prev & CANCEL_REQUESTED == 0 {
            // A cancelled node counts as "now" for the nodes below it: their caches are stale.
            DEADLINE_EPOCH.fetch_add(1, Ordering::AcqRel);
            self.fire_token();
            if prev & FINISHED == 0 {
                self.wake();
            }
        }
    }

    /// Records that the node's own deadline passed.
    pub(crate) fn mark_deadline_reached(&self) {
        let prev = self.set_flags(DEADLINE_REACHED);
        if prev & CANCELLED == 0 {
            self.fire_token();
        }
    }

    fn fire_token(&self) {
        if let Some(token) = self.token.get() {
            token.cancel();
        }
    }

    /// A token that is cancelled when this node is.
    pub(crate) fn token(&self) -> tokio_util::sync::CancellationToken {
        let token = self.token.get_or_init(Default::default).clone();
        // Cancellation may have happened before the token existed.
        if self.state() & CANCELLED != 0 || self.deadline_passed() {
            token.cancel();
        }
        token
    }

    pub(crate) fn link_token(&self, token: tokio_util::sync::CancellationToken) {
        self.linked_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token);
        let prev = self.set_flags(TOKENS_CHANGED);
        if prev & ENTERED != 0 && prev & FINISHED == 0 {
            self.wake();
        }
    }

    pub(crate) fn take_linked_tokens(&self) -> Vec<tokio_util::sync::CancellationToken> {
        std::mem::take(&mut *self.linked_tokens.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn deadline_passed(&self) -> bool {
        let raw = self.deadline_raw();
        raw != NO_DEADLINE && raw <= deadline::encode(Instant::now())
    }

    /// `cancel()` was called or the deadline has passed.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state() & CANCELLED != 0 || self.deadline_passed()
    }

    /// Stores the waker that `cancel()` and `set_deadline()` wake.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *slot {
            Some(old) if old.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether an enclosing node is cancelled or past its deadline, in which case a
    /// cancellation of this node is not its own to claim: the outer one wins.
    pub(crate) fn ancestor_cancelled(&self) -> bool {
        let mut now = None;
        let mut next = self.parent();
        while let Some(node) = next {
            let state = node.state();
            if state & FINISHED == 0 {
                if state & CANCELLED != 0 {
                    return true;
                }
                let raw = node.deadline_raw();
                if raw != NO_DEADLINE
                    && raw <= *now.get_or_insert_with(|| deadline::encode(Instant::now()))
                {
                    return true;
                }
            }
            next = node.parent();
        }
        false
    }

    /// The task the node was entered in (`None`: not entered).
    fn task(&self) -> Option<Option<tokio::task::Id>> {
        self.entered.get().map(|e| e.task)
    }

    /// The nearest enclosing scope polled by the same task whose deadline is no later than
    /// `raw`: its timer fires first (and wins a tie), so this node needs no timer of its own.
    pub(crate) fn covering_ancestor_in_task(&self, raw: u64) -> Option<Arc<Node>> {
        let task = self.task();
        let mut next = self.parent();
        while let Some(node) = next {
            if node.kind == Kind::Group || node.task() != task {
                return None;
            }
            if node.deadline_raw() <= raw && node.state() & FINISHED == 0 {
                return Some(node.clone());
            }
            next = node.parent();
        }
        None
    }

    /// The minimum deadline along the chain from this node outwards; a cancelled node counts
    /// as "now".
    pub(crate) fn effective_deadline(&self) -> Option<Instant> {
        let epoch = DEADLINE_EPOCH.load(Ordering::Acquire);
        let fresh = (epoch + 1) << 1;
        let stamp = self.effective_stamp.load(Ordering::Acquire);
        let (min, cancelled) = if stamp & !1 == fresh {
            let min = self.effective.load(Ordering::Acquire);
            if self.effective_stamp.load(Ordering::Acquire) == stamp {
                (min, stamp & 1 != 0)
            } else {
                self.walk_effective(fresh)
            }
        } else {
            self.walk_effective(fresh)
        };
        if cancelled {
            return deadline::decode(min.min(deadline::encode(Instant::now())));
        }
        deadline::decode(min)
    }

    /// Walks the chain for the minimum deadline and whether a node is cancelled, and caches
    /// the result for `fresh` (a stamp taken before the walk, so a change during the walk
    /// leaves the cache stale rather than wrong).
    fn walk_effective(&self, fresh: u64) -> (u64, bool) {
        let mut min = NO_DEADLINE;
        let mut cancelled = false;
        let mut next = Some(self);
        while let Some(node) = next {
            min = min.min(node.deadline_raw());
            cancelled |= node.state() & CANCEL_REQUESTED != 0;
            next = node.parent().map(|p| &**p);
        }
        self.effective_stamp.store(0, Ordering::Release);
        self.effective.store(min, Ordering::Release);
        self.effective_stamp
            .store(fresh | u64::from(cancelled), Ordering::Release);
        (min, cancelled)
    }

    /// Hands aborted tasks to the nearest live node at or above this one, which waits
    /// for it to drain before it completes. With no live node, the set is dropped: its tasks
    /// are aborted but nobody waits for them.
    pub(crate) fn adopt(self: &Arc<Self>, orphan: Box<dyn Orphan>) {
        let mut orphan = orphan;
        let mut next = Some(self);
        while let Some(node) = next {
            match node.try_adopt(orphan) {
                Ok(()) => return,
                Err(back) => orphan = back,
            }
            next = node.parent();
        }
    }

    fn try_adopt(&self, orphan: Box<dyn Orphan>) -> Result<(), Box<dyn Orphan>> {
        if self.state() & FINISHED != 0 {
            return Err(orphan);
        }
        let mut orphans = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
        orphans.push(orphan);
        // Same atomic word as FINISHED: either `finish` sees HAS_ORPHANS, or this sees FINISHED.
        let prev = self.set_flags(HAS_ORPHANS);
        if prev & FINISHED != 0 {
            return Err(orphans.pop().expect("pushed above"));
        }
        drop(orphans);
        self.wake();
        Ok(())
    }

    /// Marks the node finished; returns whether orphans wait to be drained.
    pub(crate) fn finish(&self) -> bool {
        self.set_flags(FINISHED) & HAS_ORPHANS != 0
    }

    /// Marks a node dropped from outside finished, and hands what was handed to it and not yet
    /// drained, plus `own` (its own aborted tasks), to the nearest live ancestor. With none, it
    /// is dropped here: the tasks are aborted, and nobody waits for them.
    pub(crate) fn abandon(&self, own: Option<Box<dyn Orphan>>) {
        self.finish();
        let mut orphans = self.take_orphans();
        orphans.extend(own);
        if let Some(parent) = self.parent() {
            for orphan in orphans {
                parent.adopt(orphan);
            }
        }
    }

    /// Takes the adopted tasks, for a node dropped before it drained them.
    pub(crate) fn take_orphans(&self) -> Vec<Box<dyn Orphan>> {
        if self.state() & HAS_ORPHANS == 0 {
            return Vec::new();
        }
        self.take_flags(HAS_ORPHANS);
        std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Polls every adopted set of tasks until all have ended.
    pub(crate) fn poll_orphans(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state() & HAS_ORPHANS == 0 {
            return Poll::Ready(());
        }
        self.register_waker(cx.waker());
        let mut orphans = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
        orphans.retain_mut(|orphan| orphan.poll_drained(cx).is_pending());
        if orphans.is_empty() {
            self.take_flags(HAS_ORPHANS);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("kind", &self.kind)
            .field("deadline", &self.deadline())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Runs `f` with the current node of this thread (borrowed, no reference-count change).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    let mut f = Some(f);
    CURRENT
        .try_with(|cell| {
            let current = cell.take();
            let out = f.take().map(|f| f(current.as_ref()));
            cell.set(current);
            out
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| f.take().expect("not called yet")(None))
}

/// A clone of the current node, for a scope entering or a group capturing its parent.
pub(crate) fn current() -> Option<Arc<Node>> {
    with_current(|node| node.cloned())
}

/// Hands `waker` to `node` unless it is the one handed over last (kept in `last`), so that a
/// running scope or group takes the node's lock only when its task's waker changes.
pub(crate) fn register_waker_once(node: &Node, last: &mut Option<Waker>, waker: &Waker) {
    if !last.as_ref().is_some_and(|w| w.will_wake(waker)) {
        node.register_waker(waker);
        *last = Some(waker.clone());
    }
}

/// Drops the future in `fut` with `node` current, so that its destructors still see the
/// node's deadline and hand orphaned tasks to it. Futures without drop glue skip the swap.
pub(crate) fn drop_in<F>(node: &mut Option<Arc<Node>>, mut fut: Pin<&mut Option<F>>) {
    if fut.is_some() {
        if std::mem::needs_drop::<F>() {
            let _enter = Enter::new(node);
            fut.set(None);
        } else {
            fut.set(None);
        }
    }
}

/// Makes `slot` the current node until the guard drops, then moves it back into `slot`.
///
/// Moving the `Arc` costs nothing; the guard also restores the previous node on unwind.
pub(crate) struct Enter<'a> {
    slot: &'a mut Option<Arc<Node>>,
    prev: Option<Arc<Node>>,
}

impl<'a> Enter<'a> {
    pub(crate) fn new(slot: &'a mut Option<Arc<Node>>) -> Enter<'a> {
        let mut node = slot.take();
        let prev = match CURRENT.try_with(|cell| cell.replace(node.take())) {
            Ok(prev) => prev,
            // Thread-local storage is being torn down: keep the node where it was.
            Err(_) => {
                *slot = node;
                None
            }
        };
        Enter { slot, prev }
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        let prev = self.prev.take();
        if let Ok(node) = CURRENT.try_with(|cell| cell.replace(prev)) {
            *self.slot = node;
        }
    }
}
