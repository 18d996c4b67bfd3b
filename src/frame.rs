//! The deadline context that scopes and groups pass to the futures they poll.
//!
//! The context is kept in a thread-local *frame* that each scope, group body and group child
//! installs for the duration of one poll (and of the drop of its inner future), and restores
//! afterwards, also on unwind. Nothing is fixed when a future is first polled: every poll reads
//! the frame in force at that moment. A scope moved to another task, or awaited again after an
//! enclosing scope ended, sees the context it is polled in now, never a stale one.
//!
//! # The frame
//!
//! ```text
//!   task A                                        task B (a group child)
//!   fail_after(5s)   frame: fixed 5s, local 5s    frame: fixed 1s (the group's
//!    └ move_on(1s)   frame: fixed 1s, local 1s      publication), local none: no timer
//!       └ group      publishes fixed 1s ──────────▶ of task A can be leaned on here
//! ```
//!
//! A frame holds:
//! - `fixed`: the earliest deadline of the enclosing scopes whose deadline cannot move (those
//!   made by `move_on_after` and friends, and what a group child inherits).
//! - `local` and `task`: the earliest deadline whose timer is armed by a scope polled in the
//!   same task (identified by its waker). An inner scope with a later or equal deadline can lean
//!   on it instead of arming a timer of its own, since the outer one fires first and wins the
//!   tie.
//! - flags: an enclosing scope is cancelled (counts as a deadline of "now"), a shutdown was
//!   requested, and whether some owner collects *drains* (below).
//! - `links`: the shared state of the enclosing scopes that have a handle, and of the enclosing
//!   groups, innermost last. Their deadlines can move and they can be cancelled from anywhere, so
//!   they are read live. [`current_effective_deadline`] is the minimum of `fixed` and their
//!   deadlines, and a `cancel()` or `set_deadline()` shows at once, before any suspension.
//!
//! A task started with plain `tokio::spawn` runs in an empty frame. A future wrapped with
//! `in_current_scope` ([`crate::context`]) brings one along: a *carrier* node, pushed as a link,
//! through which the lookups reach the context it was captured in (see [`visit`]). Nothing that
//! decides whether an enclosing scope will drop the future ([`links_expired`]) looks there.
//!
//! # Drains
//!
//! A group dropped inside a poll aborts its tasks and hands a [`Drain`] to the innermost owner
//! (a scope, a group body or a group child). The owner awaits it before it completes and
//! releases it as soon as it is empty. Handing goes through a thread-local list: an owner notes
//! its length when it installs its frame, and takes what was added when it restores the outer
//! one.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;

/// An enclosing scope is cancelled: the effective deadline is "now or earlier".
pub(crate) const CANCELLED: u8 = 1 << 0;
/// A graceful shutdown was requested by an enclosing scope or group.
pub(crate) const SHUTDOWN: u8 = 1 << 1;
/// Some owner collects drains handed up during this poll.
pub(crate) const OWNER: u8 = 1 << 2;

/// The plain-data part of a frame, saved and restored whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Data {
    /// The earliest fixed deadline in force (see the module docs).
    pub(crate) fixed: Option<Instant>,
    /// The earliest deadline whose timer runs in the task that `task` identifies.
    pub(crate) local: Option<Instant>,
    /// The waker data pointer of the poll that set `local` (0: none).
    pub(crate) task: usize,
    pub(crate) flags: u8,
}

impl Data {
    /// The deadline an inner scope polled by `task` can rely on a timer for.
    pub(crate) fn local_for(&self, task: usize) -> Option<Instant> {
        if self.task == task { self.local } else { None }
    }
}

/// The hot part of the frame: plain data, no destructor, so that reading it is a bare
/// thread-local access.
struct Frame {
    /// `Data::fixed`: with `meta`, all that a deadline lookup reads.
    fixed: Cell<Option<Instant>>,
    /// `Data::flags` in the low byte, and `Stacks::links.len()` (readable without touching the
    /// stacks) above it: a lookup tells "no link, not cancelled" from one word.
    meta: Cell<usize>,
    /// `Data::local` and `Data::task`.
    timer: Cell<(Option<Instant>, usize)>,
    /// `Stacks::drains.len()`, likewise.
    drain_count: Cell<usize>,
}

/// The bits of `Frame::meta` that hold the flags.
const FLAG_BITS: usize = 0xFF;

/// The cold part: touched only by scopes with a handle, groups, and dropped groups.
struct Stacks {
    links: RefCell<Vec<Arc<Node>>>,
    drains: RefCell<Vec<Drain>>,
}

thread_local! {
    static FRAME: Frame = const {
        Frame {
            fixed: Cell::new(None),
            meta: Cell::new(0),
            timer: Cell::new((None, 0)),
            drain_count: Cell::new(0),
        }
    };
    static STACKS: Stacks = const {
        Stacks {
            links: RefCell::new(Vec::new()),
            drains: RefCell::new(Vec::new()),
        }
    };
}

impl Frame {
    #[inline]
    fn get(&self) -> Data {
        let (local, task) = self.timer.get();
        Data {
            fixed: self.fixed.get(),
            local,
            task,
            flags: (self.meta.get() & FLAG_BITS) as u8,
        }
    }

    #[inline]
    fn set(&self, data: Data) {
        self.fixed.set(data.fixed);
        self.meta
            .set((self.meta.get() & !FLAG_BITS) | usize::from(data.flags));
        self.timer.set((data.local, data.task));
    }

    #[inline]
    fn link_count(&self) -> usize {
        self.meta.get() >> 8
    }

    #[inline]
    fn set_link_count(&self, count: usize) {
        self.meta.set((count << 8) | (self.meta.get() & FLAG_BITS));
    }
}

/// The frame in force on this thread (empty outside any scope).
#[inline]
pub(crate) fn current() -> Data {
    FRAME.with(Frame::get)
}

/// Runs `f` with the innermost link (shared state of a scope handle or group), borrowed.
pub(crate) fn with_link<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    if FRAME.with(Frame::link_count) == 0 {
        return f(None);
    }
    let mut f = Some(f);
    STACKS
        .try_with(|stacks| {
            let links = stacks.links.borrow();
            f.take().map(|f| f(links.last()))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| f.take().expect("not called yet")(None))
}

/// The effective deadline in force, and whether an enclosing scope is cancelled: the frame's
/// fixed deadline, narrowed by the live state of the enclosing handles and groups.
#[inline]
pub(crate) fn lookup() -> (Option<Instant>, bool) {
    let (fixed, meta) = FRAME.with(|f| (f.fixed.get(), f.meta.get()));
    // One test for the common case: no link to read, nothing cancelled.
    if meta & !(FLAG_BITS & !usize::from(CANCELLED)) == 0 {
        return (fixed, false);
    }
    let cancelled = meta & usize::from(CANCELLED) != 0;
    if meta >> 8 == 0 {
        return (fixed, cancelled);
    }
    lookup_links(fixed, cancelled)
}

#[cold]
fn lookup_links(mut deadline: Option<Instant>, mut cancelled: bool) -> (Option<Instant>, bool) {
    let _ = STACKS.try_with(|stacks| {
        let links = stacks.links.borrow();
        let mut take = |node: &Node| read(node, &mut deadline, &mut cancelled);
        let mut seen = Carriers::default();
        links
            .iter()
            .for_each(|node| visit(node, &mut take, &mut seen));
        outside(&links).for_each(|node| visit(&node, &mut take, &mut seen));
    });
    (deadline, cancelled)
}

/// Narrows a lookup by what `node` says: its own deadline and cancellation, and a group's (or a
/// carrier's) publication.
#[inline]
fn read(node: &Node, deadline: &mut Option<Instant>, cancelled: &mut bool) {
    *deadline = earliest(earliest(*deadline, node.deadline()), node.published());
    *cancelled |= node.is_cancel_requested() || node.published_flags() & CANCELLED != 0;
}

/// Reads `node` with `take`; for a carrier (a future wrapped by `in_current_scope`, see
/// [`crate::context`]), also the context it was captured in: its snapshot while the node it was
/// captured under has not finished, and the live nodes of that chain, skipping finished ones as
/// [`outside`] does.
#[inline]
fn visit(node: &Node, take: &mut impl FnMut(&Node), seen: &mut Carriers) {
    let Some(captured) = node.carried() else {
        take(node);
        return;
    };
    visit_carried(node, captured, take, seen);
}

#[cold]
fn visit_carried(
    carrier: &Node,
    captured: &Arc<Node>,
    take: &mut impl FnMut(&Node),
    seen: &mut Carriers,
) {
    if !seen.first_visit(carrier) {
        return;
    }
    if !captured.is_finished() {
        // The fixed deadline and flags seen where it was captured (a snapshot) end with the
        // innermost handle or group around the capture: everything inside it has ended too.
        take(carrier);
        visit(captured, take, seen);
    }
    ancestors(captured).for_each(|node| visit(&node, take, seen));
}

/// The carriers a walk has expanded. Wrapped futures nested in one another reach the same
/// chains again (without it the walk grows exponentially with the nesting), and a scope
/// polled inside a future captured inside it makes a cycle (without it the walk never ends).
#[derive(Default)]
pub(crate) struct Carriers(Vec<*const Node>);

impl Carriers {
    /// Whether `carrier` is met for the first time; records it.
    pub(crate) fn first_visit(&mut self, carrier: &Node) -> bool {
        let carrier = std::ptr::from_ref(carrier);
        if self.0.contains(&carrier) {
            return false;
        }
        self.0.push(carrier);
        true
    }
}

/// The effective deadline of the context a carrier was captured in, read now (for `Debug`).
pub(crate) fn carried_deadline(carrier: &Node) -> Option<Instant> {
    let (mut deadline, mut cancelled) = (None, false);
    let mut take = |node: &Node| read(node, &mut deadline, &mut cancelled);
    visit(carrier, &mut take, &mut Carriers::default());
    if cancelled {
        return earliest(deadline, Some(Instant::now()));
    }
    deadline
}

/// The live nodes that enclosed the outermost link where it was first entered, and still run:
/// for a group child, the handles and groups around its group, in the group's task. (Fixed
/// deadlines from there come with the group's publication; these can still move.)
fn outside(links: &[Arc<Node>]) -> impl Iterator<Item = Arc<Node>> {
    links
        .first()
        .map(|node| ancestors(node))
        .into_iter()
        .flatten()
}

/// The nodes above `node` (its `parent` chain) that have not finished.
fn ancestors(node: &Node) -> impl Iterator<Item = Arc<Node>> + use<> {
    let mut next = node.parent();
    std::iter::from_fn(move || {
        while let Some(node) = next.take() {
            next = node.parent();
            if !node.is_finished() {
                return Some(node);
            }
        }
        None
    })
}

/// Whether an enclosing handle or group was cancelled or saw its deadline pass.
pub(crate) fn links_expired() -> bool {
    if FRAME.with(Frame::link_count) == 0 {
        return false;
    }
    STACKS
        .try_with(|stacks| {
            let links = stacks.links.borrow();
            links
                .iter()
                .any(|node| node.is_cancel_requested() || node.deadline_passed())
                // Across a task edge a deadline is never leaned on: only a cancellation counts.
                || outside(&links).any(|node| node.is_cancel_requested())
        })
        .unwrap_or(false)
}

/// Installs a frame until dropped; then restores the previous one (also on unwind) and moves the
/// drains handed up meanwhile into `collect`.
pub(crate) struct Enter<'a> {
    prev: Data,
    /// Where to put the link back, when this frame pushed one.
    link: Option<&'a mut Option<Arc<Node>>>,
    mark: usize,
    collect: Option<&'a mut Drains>,
}

impl<'a> Enter<'a> {
    /// Installs `data`; drains handed up during the frame go to `collect` (which must be given
    /// when `data` has the [`OWNER`] flag).
    #[inline(always)]
    pub(crate) fn new(data: Data, collect: Option<&'a mut Drains>) -> Enter<'a> {
        Enter::narrow(|_| data, collect)
    }

    /// Installs `data` over `outer`, the frame in force (read by the caller just before).
    #[inline]
    pub(crate) fn over(outer: Data, data: Data, collect: Option<&'a mut Drains>) -> Enter<'a> {
        let mark = FRAME.with(|f| {
            f.set(data);
            f.drain_count.get()
        });
        Enter {
            prev: outer,
            link: None,
            mark,
            collect,
        }
    }

    /// Installs the frame `narrow` makes of the one in force, in one thread-local access.
    #[inline(always)]
    pub(crate) fn narrow(
        narrow: impl FnOnce(&Data) -> Data,
        collect: Option<&'a mut Drains>,
    ) -> Enter<'a> {
        let (prev, mark) = FRAME.with(|f| {
            let prev = f.get();
            f.set(narrow(&prev));
            (prev, f.drain_count.get())
        });
        Enter {
            prev,
            link: None,
            mark,
            collect,
        }
    }

    /// Pushes the node in `link` as the innermost link, until dropped (moved in and back out
    /// of the thread-local, with no reference-count traffic).
    #[inline(always)]
    pub(crate) fn push_link(&mut self, link: &'a mut Option<Arc<Node>>) {
        let Some(node) = link.take() else {
            return;
        };
        let mut node = Some(node);
        let pushed = STACKS.try_with(|stacks| {
            let mut links = stacks.links.borrow_mut();
            links.push(node.take().expect("taken once"));
            links.len()
        });
        match pushed {
            Ok(len) => {
                FRAME.with(|f| f.set_link_count(len));
                self.link = Some(link);
            }
            Err(_) => *link = node,
        }
    }

    /// Like [`new`](Self::new), and pushes the node in `link` (see [`push_link`](Self::push_link)).
    #[inline(always)]
    pub(crate) fn with_link(
        data: Data,
        link: &'a mut Option<Arc<Node>>,
        collect: Option<&'a mut Drains>,
    ) -> Enter<'a> {
        let mut enter = Enter::new(data, collect);
        enter.push_link(link);
        enter
    }
}

impl Drop for Enter<'_> {
    #[inline]
    fn drop(&mut self) {
        let prev = self.prev;
        let handed_up = FRAME.with(|f| {
            f.set(prev);
            f.drain_count.get() > self.mark
        });
        if self.link.is_some() || handed_up {
            self.restore_stacks(prev.flags, handed_up);
        }
    }
}

impl Enter<'_> {
    /// Takes the pushed link back out of the thread-local, and collects the drains handed up.
    /// Not cold: every poll of a group and of its tasks pushed a link. Not inlined either, so
    /// that the polls of scopes without a handle, which push none, stay lean.
    #[inline(never)]
    fn restore_stacks(&mut self, prev_flags: u8, handed_up: bool) {
        if let Some(slot) = self.link.take() {
            let _ = STACKS.try_with(|stacks| {
                let mut links = stacks.links.borrow_mut();
                *slot = links.pop();
                FRAME.with(|f| f.set_link_count(links.len()));
            });
        }
        if handed_up {
            self.collect_drains(prev_flags);
        }
    }
}

impl Enter<'_> {
    /// Moves the drains handed up during the frame to its owner (`collect`), or releases them
    /// when nobody below owns them (`prev_flags`: the flags of the frame restored).
    #[cold]
    fn collect_drains(&mut self, prev_flags: u8) {
        let mark = self.mark;
        let collect = self.collect.as_deref_mut();
        let _ = STACKS.try_with(|stacks| {
            let mut drains = stacks.drains.borrow_mut();
            match collect {
                Some(collect) => collect.0.extend(drains.drain(mark..)),
                // Nobody below owns them: released, not awaited.
                None if prev_flags & OWNER == 0 => drains.truncate(mark),
                // Left for the enclosing owner, which takes everything past its own mark.
                None => {}
            }
            FRAME.with(|f| f.drain_count.set(drains.len()));
        });
    }
}

/// Something aborted that must be awaited until it is empty: the tasks of a group that was
/// dropped.
pub(crate) trait Drainable: Send + Sync {
    /// Polls until every task has ended (its future dropped), registering `cx` otherwise.
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A handle on a dropped group's aborted tasks, awaited by whoever it was handed to.
pub(crate) type Drain = Arc<dyn Drainable>;

/// Drains an owner waits for; each is released as soon as it is empty.
#[derive(Default)]
pub(crate) struct Drains(Vec<Drain>);

impl Drains {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Polls every drain, releasing the empty ones; ready when none is left.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_empty() {
            return Poll::Ready(());
        }
        self.0.retain(|drain| drain.poll_drained(cx).is_pending());
        if self.0.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub(crate) fn append(&mut self, other: &mut Drains) {
        self.0.append(&mut other.0);
    }

    /// Hands every drain to the owner of the frame in force (see [`hand_up`]).
    pub(crate) fn hand_up(&mut self) {
        for drain in self.0.drain(..) {
            hand_up(drain);
        }
    }
}

impl From<Drain> for Drains {
    fn from(drain: Drain) -> Drains {
        Drains(vec![drain])
    }
}

impl std::fmt::Debug for Drains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drains")
            .field("len", &self.0.len())
            .finish()
    }
}

/// Hands the drains it holds to the enclosing owner when dropped: also on unwind, when a
/// destructor panics while an owner is being dropped.
pub(crate) struct HandUp(pub(crate) Drains);

impl Drop for HandUp {
    fn drop(&mut self) {
        self.0.hand_up();
    }
}

/// Hands `drain` to the innermost owner, which waits for it. With no owner (dropped outside any
/// quattro future) it is released here: its tasks are aborted, and nobody waits for them.
pub(crate) fn hand_up(drain: Drain) {
    if current().flags & OWNER == 0 {
        return;
    }
    let _ = STACKS.try_with(|stacks| {
        let mut drains = stacks.drains.borrow_mut();
        drains.push(drain);
        FRAME.with(|f| f.drain_count.set(drains.len()));
    });
}

// ---------------------------------------------------------------------------------------------
// Deadlines: encoding for atomics, and the lookup.

/// The encoded value of "no deadline".
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// How far in the past the encoding's origin lies: deadlines are stored as nanoseconds since
/// the origin, so the origin must precede any deadline a program can build.
const ORIGIN_LOOKBACK: [Duration; 4] = [
    Duration::from_secs(100 * 365 * 24 * 3600),
    Duration::from_secs(365 * 24 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::ZERO,
];

/// About thirty years: what a timeout too large to add to `now` turns into, as in
/// `tokio::time::timeout`.
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = std::time::Instant::now();
        ORIGIN_LOOKBACK
            .iter()
            .find_map(|back| now.checked_sub(*back))
            .unwrap_or(now)
    })
}

/// Encodes an instant as nanoseconds since the origin, so that it fits an atomic. Instants
/// before the origin become the origin (they are long past either way); instants too far
/// ahead saturate just below [`NO_DEADLINE`].
pub(crate) fn encode(instant: Instant) -> u64 {
    let nanos = instant
        .into_std()
        .checked_duration_since(origin())
        .map_or(0, |d| d.as_nanos());
    u64::try_from(nanos)
        .unwrap_or(NO_DEADLINE - 1)
        .min(NO_DEADLINE - 1)
}

pub(crate) fn encode_opt(deadline: Option<Instant>) -> u64 {
    deadline.map_or(NO_DEADLINE, encode)
}

pub(crate) fn decode(raw: u64) -> Option<Instant> {
    (raw != NO_DEADLINE).then(|| Instant::from_std(origin() + Duration::from_nanos(raw)))
}

/// `now + timeout`, or about thirty years from now when that overflows, so that
/// `Duration::MAX` means "never" and never panics.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + FAR_FUTURE)
}

/// The earlier of two optional deadlines (`None` is "never").
#[inline]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Returns the earliest deadline of the cancel scopes that enclose the caller.
///
/// Returns `None` when no enclosing scope has a deadline, and outside any scope or runtime. A scope
/// that has been cancelled counts as a deadline of "now", so code that passes the deadline on to
/// another service tells it not to start. The end of a graceful shutdown's grace period counts as a
/// deadline too.
///
/// Deadlines continue into tasks spawned by a [`TaskGroup`]: a task sees the deadlines of the
/// scopes that enclose its group (Trio's rule). So a deadline set where a request enters a service
/// reaches every task that works for it.
///
/// This is the value to pass on with outgoing calls (see [`propagate`](crate::propagate)). The
/// lookup is cheap: a thread-local read, plus the shared state of the enclosing scope handles and
/// groups, if any. It also works in a `Drop` impl while a scope's cancellation drops the future
/// inside.
///
/// A task started with plain `tokio::spawn`, by your code or inside a library, sees no enclosing
/// scope, so this returns `None` there. Spawn it with [`TaskGroup::spawn`] instead, which also
/// cancels the task with the group. When a library does the spawning, wrap its future with
/// [`in_current_scope`](crate::WithScope::in_current_scope), which carries the deadline and
/// shutdown requests into the task without tying the task's life to the scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{current_effective_deadline, move_on_after};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(current_effective_deadline(), None);
///
/// move_on_after(Duration::from_secs(10), async {
///     let outer = current_effective_deadline().expect("inside a scope");
///     move_on_after(Duration::from_secs(1), async move {
///         // The inner deadline is earlier, so it is the one in force.
///         assert!(current_effective_deadline().unwrap() < outer);
///     })
///     .await;
///     move_on_after(Duration::from_secs(60), async move {
///         // A later inner deadline changes nothing.
///         assert_eq!(current_effective_deadline(), Some(outer));
///     })
///     .await;
/// })
/// .await;
/// # }
/// ```
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`TaskGroup::spawn`]: crate::TaskGroup::spawn
#[inline]
#[must_use]
pub fn current_effective_deadline() -> Option<Instant> {
    let (deadline, cancelled) = lookup();
    if cancelled {
        return earliest(deadline, Some(Instant::now()));
    }
    deadline
}
