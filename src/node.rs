//! The shared state behind a [`CancelScope`] handle and a task group: a deadline that can move,
//! a cancellation request, the waker of the task running it, and the tokens handed out for it.
//!
//! A scope made by `move_on_after` and friends has no node until a handle is asked for; the
//! deadline context that flows to the code inside lives in the per-poll frame
//! ([`crate::frame`]), not here. The one link kept between nodes is `parent`, the node in force
//! when this one was first entered, for shutdown tokens (see [`crate::shutdown`]).
//!
//! A *carrier* is the node of a future wrapped by `in_current_scope` (see [`crate::context`]):
//! besides its `parent` (where it is polled now, which can drop it) it keeps `carried`, the
//! node in force where it was captured. The deadline and shutdown views follow both links;
//! whatever decides that an enclosing scope will drop the future (`frame::links_expired`)
//! follows `parent` only, since nothing on the carried side drops it.
//!
//! [`CancelScope`]: crate::CancelScope

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::Waker;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::CancelReason;
use crate::frame::{self, NO_DEADLINE};
use crate::loom::{AtomicU8, AtomicU32, AtomicU64, Mutex};

// State bits of a node.
/// `cancel()` was called.
pub(crate) const CANCEL_REQUESTED: u32 = 1 << 0;
/// The node's own deadline was observed to pass.
pub(crate) const DEADLINE_REACHED: u32 = 1 << 1;
/// The scope was entered (first poll). A second entry is a programming error.
pub(crate) const ENTERED: u32 = 1 << 2;
/// The scope or group finished.
pub(crate) const FINISHED: u32 = 1 << 3;
/// The scope ended because of its own cancellation.
pub(crate) const CAUGHT: u32 = 1 << 4;
/// A `CancellationToken` was linked; the running future must start watching it.
pub(crate) const TOKENS_CHANGED: u32 = 1 << 5;
/// A graceful shutdown was requested for this node (see `crate::shutdown`).
pub(crate) const SHUTDOWN: u32 = 1 << 6;

/// Either kind of cancellation.
pub(crate) const CANCELLED: u32 = CANCEL_REQUESTED | DEADLINE_REACHED;

pub(crate) struct Node {
    /// Encoded with [`frame::encode`]; `NO_DEADLINE` when there is none.
    deadline: AtomicU64,
    state: AtomicU32,
    /// Why a group's tasks are cancelled ([`CancelReason::to_u8`]; `0`: not yet). Written
    /// once, by whoever starts the group's cancellation (or its normal end), before any task
    /// is aborted; only the cancel path touches it.
    reason: AtomicU8,
    /// A group's copy of `reason`, shared with its tasks' handles: they read it without
    /// touching the node, whose reference count the tasks update as they run and end (a
    /// cache line less to bounce between threads at each spawn). `None` for other nodes.
    shared_reason: Option<Arc<std::sync::atomic::AtomicU8>>,
    /// A group's publication for its children: the fixed deadline of the frame it was last
    /// polled in (encoded), and that frame's `CANCELLED`/`SHUTDOWN` flags. Children read it
    /// live, walking up from their group (see `frame::lookup`).
    published: AtomicU64,
    published_flags: AtomicU32,
    /// The waker of the task that runs the node, for `cancel()` and `set_deadline()` from
    /// elsewhere.
    waker: Mutex<Option<Waker>>,
    /// Tokens whose cancellation cancels this node, waiting to be picked up by its future.
    linked_tokens: Mutex<Vec<CancellationToken>>,
    /// A token that fires when this node is cancelled, created on demand.
    token: OnceLock<CancellationToken>,
    /// Shutdown tokens, created on demand (see `crate::shutdown`): `.0` fires on this node's
    /// own request, `.1` (a child of the parent's) on this node's or any enclosing request.
    pub(crate) shutdown: (OnceLock<CancellationToken>, OnceLock<CancellationToken>),
    /// The node in force where this one was first entered (`None` inside: at top level).
    ///
    /// Set again on every poll of the scope or group, so that a future moved to another task
    /// (or awaited again elsewhere) is linked to what encloses it now.
    parent: std::sync::Mutex<Option<Arc<Node>>>,
    /// The address of `parent`'s node (0: none), so that a poll under the same parent (nearly
    /// every poll) checks without the lock. Written and read by the future that owns the node
    /// only. While it names a node, `parent` keeps that node alive: no other node can have its
    /// address meanwhile.
    parent_addr: std::sync::atomic::AtomicUsize,
    /// For a carrier only: the innermost node in force where its future was captured (fixed
    /// for its life). `None` for every other node.
    carried: Option<Arc<Node>>,
}

impl Node {
    pub(crate) fn new(deadline: u64) -> Node {
        Node {
            deadline: AtomicU64::new(deadline),
            state: AtomicU32::new(0),
            reason: AtomicU8::new(0),
            shared_reason: None,
            published: AtomicU64::new(NO_DEADLINE),
            published_flags: AtomicU32::new(0),
            waker: Mutex::new(None),
            linked_tokens: Mutex::new(Vec::new()),
            token: OnceLock::new(),
            shutdown: (OnceLock::new(), OnceLock::new()),
            parent: std::sync::Mutex::new(None),
            parent_addr: std::sync::atomic::AtomicUsize::new(0),
            carried: None,
        }
    }

    /// A carrier for a future captured where `captured` is the innermost node in force (see
    /// the module docs). With no node there it is a plain node, for the published snapshot only.
    pub(crate) fn carrier(captured: Option<Arc<Node>>) -> Node {
        Node {
            carried: captured,
            ..Node::new(NO_DEADLINE)
        }
    }

    /// The node a carrier was captured under (`None` for other nodes).
    #[inline]
    pub(crate) fn carried(&self) -> Option<&Arc<Node>> {
        self.carried.as_ref()
    }

    /// A group's node, entered where the group first runs.
    pub(crate) fn new_group() -> Arc<Node> {
        Node::entered_here(Some(Arc::default()))
    }

    /// A node entered where it is made, with no shared reason: a blocking task's, under its
    /// group's.
    pub(crate) fn new_entered() -> Arc<Node> {
        Node::entered_here(None)
    }

    fn entered_here(shared_reason: Option<Arc<std::sync::atomic::AtomicU8>>) -> Arc<Node> {
        let node = Node {
            shared_reason,
            ..Node::new(NO_DEADLINE)
        };
        node.state.store(ENTERED, Ordering::Relaxed);
        node.link_to_current();
        Arc::new(node)
    }

    pub(crate) fn parent(&self) -> Option<Arc<Node>> {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the innermost link in force this node's parent (called where the node is polled,
    /// before it is pushed as a link itself); writes only when it changed.
    pub(crate) fn link_to_current(&self) {
        frame::with_link(|link| {
            let addr = link.map_or(0, |link| Arc::as_ptr(link) as usize);
            if self.parent_addr.load(Ordering::Relaxed) == addr {
                return;
            }
            let mut parent = self.parent.lock().unwrap_or_else(|e| e.into_inner());
            *parent = link.cloned();
            self.parent_addr.store(addr, Ordering::Relaxed);
        });
    }

    /// Marks the node as entered where it runs now.
    ///
    /// # Panics
    ///
    /// Panics if the node was entered before: a scope runs at most once.
    #[track_caller]
    pub(crate) fn enter(&self) {
        let prev = self.state.fetch_or(ENTERED, Ordering::AcqRel);
        assert!(
            prev & ENTERED == 0,
            "CancelScope entered twice: a cancel scope can only be run once; \
             create a new CancelScope for every run"
        );
        self.link_to_current();
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
        frame::decode(self.deadline_raw())
    }

    /// Stores a new deadline and wakes the running future, which re-arms its timer.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        self.deadline
            .store(frame::encode_opt(deadline), Ordering::Release);
        self.wake_if_running();
    }

    /// Moves the deadline to `at` if that is earlier (never later, whoever calls at once);
    /// returns whether it moved.
    pub(crate) fn shorten_deadline(&self, at: Instant) -> bool {
        let raw = frame::encode(at);
        let earlier = self.deadline.fetch_min(raw, Ordering::AcqRel) > raw;
        if earlier {
            self.wake_if_running();
        }
        earlier
    }

    /// Requests cancellation; idempotent.
    pub(crate) fn cancel(&self) {
        let prev = self.set_flags(CANCEL_REQUESTED);
        if prev & CANCEL_REQUESTED == 0 {
            self.fire_token();
            if prev & FINISHED == 0 {
                self.wake();
            }
        }
    }

    /// Records why the group's tasks are being cancelled, unless a reason was recorded
    /// already: the first cause wins. Called before the tasks are aborted, so that a task
    /// dropped with no reason here was dropped by its handle or by the runtime.
    pub(crate) fn record_cancel_reason(&self, reason: CancelReason) {
        // Release: whoever reads the reason after seeing the cancellation (the aborted task's
        // handle) sees it. A failed exchange means an earlier cause won.
        let won = self
            .reason
            .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if let (true, Some(shared)) = (won, &self.shared_reason) {
            // Before any task is aborted, as the reason itself.
            shared.store(reason.to_u8(), Ordering::Release);
        }
    }

    /// A group's reason, as its tasks' handles read it (see `shared_reason`).
    pub(crate) fn shared_reason(&self) -> Option<Arc<std::sync::atomic::AtomicU8>> {
        self.shared_reason.clone()
    }

    /// Why the group's tasks are being cancelled, once that started.
    pub(crate) fn cancel_reason(&self) -> Option<CancelReason> {
        CancelReason::from_u8(self.reason.load(Ordering::Acquire))
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
    pub(crate) fn token(&self) -> CancellationToken {
        let token = self.token.get_or_init(Default::default).clone();
        // Cancellation may have happened before the token existed.
        if self.state() & CANCELLED != 0 || self.deadline_passed() {
            token.cancel();
        }
        token
    }

    pub(crate) fn link_token(&self, token: CancellationToken) {
        self.linked_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token);
        self.set_flags(TOKENS_CHANGED);
        self.wake_if_running();
    }

    pub(crate) fn take_linked_tokens(&self) -> Vec<CancellationToken> {
        std::mem::take(&mut *self.linked_tokens.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        let raw = self.deadline_raw();
        raw != NO_DEADLINE && raw <= frame::encode(Instant::now())
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state() & FINISHED != 0
    }

    /// `cancel()` was called.
    pub(crate) fn is_cancel_requested(&self) -> bool {
        self.state() & CANCEL_REQUESTED != 0
    }

    /// `cancel()` was called or the deadline has passed.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state() & CANCELLED != 0 || self.deadline_passed()
    }

    /// Stores the waker that `cancel()` and `set_deadline()` wake.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        crate::waker::register(&mut slot, waker);
    }

    /// Drops the stored waker, so that a node kept by a handle does not keep a finished task
    /// alive.
    pub(crate) fn forget_waker(&self) {
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wake_if_running(&self) {
        let state = self.state();
        if state & ENTERED != 0 && state & FINISHED == 0 {
            self.wake();
        }
    }

    /// Records what a group's children inherit; writes only what changed.
    pub(crate) fn publish(&self, fixed: Option<Instant>, flags: u8) {
        let raw = frame::encode_opt(fixed);
        if self.published.load(Ordering::Relaxed) != raw {
            self.published.store(raw, Ordering::Release);
        }
        let flags = u32::from(flags);
        if self.published_flags.load(Ordering::Relaxed) != flags {
            self.published_flags.store(flags, Ordering::Release);
        }
    }

    /// The fixed deadline a group published (`None` for a scope's node).
    pub(crate) fn published(&self) -> Option<Instant> {
        frame::decode(self.published.load(Ordering::Acquire))
    }

    /// The frame flags a group published.
    pub(crate) fn published_flags(&self) -> u8 {
        // Only `u8` flags are ever stored.
        self.published_flags.load(Ordering::Acquire) as u8
    }

    /// Marks the node finished.
    pub(crate) fn finish(&self) {
        self.set_flags(FINISHED);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("deadline", &self.deadline())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Hands `waker` to `node` unless it is the one handed over last (kept in `last`), so that a
/// running scope or group takes the node's lock only when its task's waker changes.
pub(crate) fn register_waker_once(node: &Node, last: &mut Option<Waker>, waker: &Waker) {
    if !last.as_ref().is_some_and(|w| w.will_wake(waker)) {
        node.register_waker(waker);
        *last = Some(waker.clone());
    }
}

/// Model checks of the handshakes between a running scope or group and its handles, under
/// `loom` (see `src/loom.rs`).
#[cfg(all(test, quattro_loom))]
mod loom_tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::{Wake, Waker};

    use tokio::time::Instant;

    use super::{ENTERED, Node};
    use crate::error::CancelReason;
    use crate::frame::NO_DEADLINE;
    use loom::sync::atomic::AtomicBool;

    /// A waker that records that it was woken.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }

    fn running() -> (Arc<Node>, Arc<Flag>, Waker) {
        let node = Arc::new(Node::new(NO_DEADLINE));
        node.set_flags(ENTERED);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        (node, flag, waker)
    }

    /// The future registers its waker, then reads the flag; a `cancel()` from another thread
    /// is either seen or wakes it, never lost.
    #[test]
    fn cancel_is_seen_or_wakes() {
        loom::model(|| {
            let (node, flag, waker) = running();
            let handle = node.clone();
            let canceller = loom::thread::spawn(move || handle.cancel());
            node.register_waker(&waker);
            let seen = node.is_cancel_requested();
            canceller.join().unwrap();
            assert!(seen || flag.0.load(SeqCst), "a cancel was lost");
        });
    }

    /// Likewise for a deadline moved from another thread.
    #[test]
    fn set_deadline_is_seen_or_wakes() {
        loom::model(|| {
            let (node, flag, waker) = running();
            let handle = node.clone();
            let at = Instant::now();
            let mover = loom::thread::spawn(move || handle.set_deadline(Some(at)));
            node.register_waker(&waker);
            let seen = node.deadline_raw() != NO_DEADLINE;
            mover.join().unwrap();
            assert!(seen || flag.0.load(SeqCst), "a deadline move was lost");
        });
    }

    /// A cancellation with its reason, from another thread (`TaskGroup::cancel`), against
    /// another cause recorded here (a failure the group's poll saw): one reason wins for good,
    /// and whoever sees the cancellation sees a reason with it.
    #[test]
    fn the_first_reason_wins_and_comes_with_the_cancellation() {
        loom::model(|| {
            let (node, _flag, _waker) = running();
            let other = node.clone();
            let canceller = loom::thread::spawn(move || {
                other.record_cancel_reason(CancelReason::Cancelled);
                other.cancel();
            });
            if node.is_cancel_requested() {
                assert!(
                    node.cancel_reason().is_some(),
                    "a cancellation without its reason"
                );
            }
            node.record_cancel_reason(CancelReason::Failure);
            let here = node.cancel_reason();
            canceller.join().unwrap();
            assert!(here.is_some());
            assert_eq!(node.cancel_reason(), here, "a recorded reason was replaced");
        });
    }

    /// Concurrent shortenings (two `request_shutdown(grace)` calls) keep the earliest deadline.
    #[test]
    fn concurrent_shortenings_keep_the_earliest() {
        loom::model(|| {
            let (node, _flag, _waker) = running();
            let now = Instant::now();
            let (early, late) = (now, now + std::time::Duration::from_secs(30));
            let other = node.clone();
            let t = loom::thread::spawn(move || other.shorten_deadline(late));
            let moved_early = node.shorten_deadline(early);
            let moved_late = t.join().unwrap();
            assert!(moved_early, "the earlier cut always moves the deadline");
            assert_eq!(node.deadline(), Some(early));
            let _ = moved_late;
        });
    }
}
