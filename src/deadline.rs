//! Deadlines: how they are stored, and how code reads the one in force.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::chain;

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

pub(crate) fn decode(raw: u64) -> Option<Instant> {
    (raw != NO_DEADLINE).then(|| Instant::from_std(origin() + Duration::from_nanos(raw)))
}

/// `now + timeout`, or about thirty years from now when that overflows, so that
/// `Duration::MAX` means "never" and never panics.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + FAR_FUTURE)
}

/// Returns the deadline in force for the code that calls it: the earliest deadline among the
/// cancel scopes that enclose it, or `None` when none has a deadline.
///
/// The chain of scopes continues into tasks spawned by a [`TaskGroup`]: a child sees the
/// deadlines of the scopes that enclose the *group* (Trio's rule), so a deadline set where a
/// request enters a service reaches every task that works for it. A scope that has been
/// cancelled counts as a deadline of "now or earlier", so code that hands the deadline on to
/// another service tells it not to start.
///
/// This is the value to propagate on outgoing calls (see `tokio::time::sleep_until` to wait
/// for it, or compute what is left with [`Instant::saturating_duration_since`]).
///
/// The lookup reads a thread-local set while the enclosing scopes poll, walks the chain and
/// takes no lock; it also works while a future inside a scope is being dropped by that scope's
/// cancellation (in a `Drop` impl).
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
/// # Panics
///
/// Never. Outside any runtime or any scope it returns `None`.
///
/// [`TaskGroup`]: crate::TaskGroup
pub fn current_effective_deadline() -> Option<Instant> {
    chain::with_current(|node| node.and_then(|node| node.effective_deadline()))
}
