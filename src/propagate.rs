//! Deadline propagation across the wire, in gRPC's `grpc-timeout` header.
//!
//! A deadline set where a request enters a system should bound all the work done for it, in
//! every service the request reaches. Inside one process, [`current_effective_deadline`] gives
//! the deadline in force. This module turns it into the relative timeout that gRPC (and any
//! protocol willing to borrow its header) sends on the wire, and turns a received timeout back
//! into a deadline. A relative timeout goes on the wire, not an absolute time, because the
//! clocks of two machines do not agree. The price is the time the request spends in transit,
//! which the timeout does not count.
//!
//! - A **client** calls [`header_value`] before each outgoing call and, when it returns
//!   `Some`, sends the value in the [`HEADER_NAME`] header. No header means no deadline.
//! - A **server** reads the header, turns it into a deadline with [`deadline_from_header`]
//!   (the timeout counts from the moment of the call), and runs the handler under
//!   [`fail_at`]`(deadline, handler)`. Everything the handler does, including its own outgoing
//!   calls, then sees that deadline (or an earlier one it sets itself), so the deadline keeps
//!   flowing down the call tree.
//!
//! A malformed header is the sender's bug. Answer it with an error rather than run the handler
//! without the deadline the caller meant to set.
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//!
//! use quattro::propagate::{self, HEADER_NAME};
//! use quattro::{fail_at, move_on_after};
//!
//! type Headers = HashMap<&'static str, String>;
//!
//! // The client side: stamp the deadline in force on the outgoing request.
//! fn outgoing_request() -> Headers {
//!     let mut headers = Headers::new();
//!     if let Some(timeout) = propagate::header_value() {
//!         headers.insert(HEADER_NAME, timeout.to_string());
//!     }
//!     headers
//! }
//!
//! // The server side: run the handler under the deadline the request came with.
//! async fn serve(headers: Headers) -> Result<Option<Duration>, String> {
//!     let Some(value) = headers.get(HEADER_NAME) else {
//!         return Ok(handler().await); // the caller set no deadline
//!     };
//!     let deadline = propagate::deadline_from_header(value).map_err(|e| e.to_string())?;
//!     fail_at(deadline, handler()).await.map_err(|e| e.to_string())
//! }
//!
//! async fn handler() -> Option<Duration> {
//!     // The caller's deadline is in force here, and goes on with any further call.
//!     propagate::remaining()
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let headers = move_on_after(Duration::from_millis(250), async { outgoing_request() })
//!     .await
//!     .unwrap();
//! assert_eq!(headers[HEADER_NAME], "250000u");
//! assert_eq!(serve(headers).await, Ok(Some(Duration::from_millis(250))));
//!
//! // Outside any scope there is no deadline to send.
//! assert!(outgoing_request().is_empty());
//! # }
//! ```
//!
//! # Rounding
//!
//! The wire format has at most 8 digits, so [`encode_timeout`] picks the finest unit in which
//! the timeout fits and **rounds down** to a whole number of that unit. Rounding down is the
//! safe direction for a deadline: the receiver must never believe it has more time than the
//! caller will wait. Work done after the caller has given up is thrown away, and each hop of a
//! call chain would add its own rounding on top.
//!
//! The loss is below one unit. A coarser unit is chosen only when the finer one overflows 8
//! digits, so the loss is less than one part in 10⁵ of the timeout: nothing below 0.1 s, under
//! a microsecond below 100 s, and under a millisecond below 27 hours. A timeout that is not
//! zero never rounds down to zero, since the finest unit is the nanosecond, as in
//! [`Duration`].
//!
//! An expired deadline is sent as `0n`, and so is a cancelled scope, which counts as one.
//! [`deadline_from_header`] turns `0n` into "now", so a handler run under [`fail_at`] with it
//! is cancelled at its first suspension. Timeouts longer than the format can carry (about
//! 11,400 years) are sent as `99999999H`, which means "never" in practice.
//!
//! [`current_effective_deadline`]: crate::current_effective_deadline
//! [`fail_at`]: crate::fail_at

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::current_effective_deadline;
use crate::frame::deadline_after;

/// The name of the header that carries the timeout, `grpc-timeout`.
///
/// # Examples
///
/// ```
/// assert_eq!(quattro::propagate::HEADER_NAME, "grpc-timeout");
/// ```
pub const HEADER_NAME: &str = "grpc-timeout";

/// The largest number the wire format can carry: 8 digits.
const MAX_VALUE: u32 = 99_999_999;

/// How many digits the wire format allows.
const MAX_DIGITS: usize = 8;

/// A timeout in the `grpc-timeout` wire format, up to 8 digits and a unit.
///
/// Build one with [`encode_timeout`], or get the one for the deadline in force with
/// [`header_value`]. Send it in its [`Display`](fmt::Display) form, and read one with
/// [`str::parse`]. A value keeps the unit it was written with, so two values that mean the
/// same time in different units (`1S` and `1000m`) are not equal. Compare
/// [`to_duration`](Self::to_duration) for that.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::propagate::{GrpcTimeout, encode_timeout};
///
/// let timeout = encode_timeout(Duration::from_secs(90));
/// assert_eq!(timeout.to_string(), "90000000u");
///
/// let parsed: GrpcTimeout = "2M".parse().unwrap();
/// assert_eq!(parsed.to_duration(), Duration::from_secs(120));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcTimeout {
    /// At most [`MAX_VALUE`].
    value: u32,
    unit: Unit,
}

/// The units of the wire format, finest first, which is the order [`encode_timeout`] tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Unit {
    Nanos,
    Micros,
    Millis,
    Seconds,
    Minutes,
    Hours,
}

impl Unit {
    const FINEST_FIRST: [Unit; 6] = [
        Unit::Nanos,
        Unit::Micros,
        Unit::Millis,
        Unit::Seconds,
        Unit::Minutes,
        Unit::Hours,
    ];

    fn nanos(self) -> u128 {
        const SECOND: u128 = 1_000_000_000;
        match self {
            Unit::Nanos => 1,
            Unit::Micros => 1_000,
            Unit::Millis => 1_000_000,
            Unit::Seconds => SECOND,
            Unit::Minutes => 60 * SECOND,
            Unit::Hours => 3600 * SECOND,
        }
    }

    fn symbol(self) -> u8 {
        match self {
            Unit::Nanos => b'n',
            Unit::Micros => b'u',
            Unit::Millis => b'm',
            Unit::Seconds => b'S',
            Unit::Minutes => b'M',
            Unit::Hours => b'H',
        }
    }

    fn from_symbol(symbol: u8) -> Option<Unit> {
        Unit::FINEST_FIRST
            .into_iter()
            .find(|unit| unit.symbol() == symbol)
    }

    fn duration(self, value: u32) -> Duration {
        let value = u64::from(value);
        // Whole seconds for the coarse units: 99999999 hours in nanoseconds overflows a u64.
        match self {
            Unit::Nanos => Duration::from_nanos(value),
            Unit::Micros => Duration::from_micros(value),
            Unit::Millis => Duration::from_millis(value),
            Unit::Seconds => Duration::from_secs(value),
            Unit::Minutes => Duration::from_secs(value * 60),
            Unit::Hours => Duration::from_secs(value * 3600),
        }
    }
}

impl GrpcTimeout {
    /// Returns the time this value stands for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::propagate::GrpcTimeout;
    ///
    /// let timeout: GrpcTimeout = "1500m".parse().unwrap();
    /// assert_eq!(timeout.to_duration(), Duration::from_millis(1500));
    /// ```
    #[must_use]
    pub fn to_duration(self) -> Duration {
        self.unit.duration(self.value)
    }

    /// Returns `true` if this value means "already expired", which is `0` of any unit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::propagate::encode_timeout;
    ///
    /// assert!(encode_timeout(Duration::ZERO).is_expired());
    /// assert!(!encode_timeout(Duration::from_nanos(1)).is_expired());
    /// ```
    #[must_use]
    pub fn is_expired(self) -> bool {
        self.value == 0
    }
}

impl fmt::Display for GrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, char::from(self.unit.symbol()))
    }
}

impl fmt::Debug for GrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wire form is the most readable description of the value.
        write!(f, "GrpcTimeout({self})")
    }
}

impl FromStr for GrpcTimeout {
    type Err = ParseTimeoutError;

    fn from_str(s: &str) -> Result<GrpcTimeout, ParseTimeoutError> {
        let bytes = s.as_bytes();
        let (&symbol, digits) = bytes
            .split_last()
            .ok_or(ParseTimeoutError::new(Kind::Empty))?;
        let unit = Unit::from_symbol(symbol).ok_or_else(|| {
            ParseTimeoutError::new(if symbol.is_ascii_digit() {
                Kind::MissingUnit
            } else {
                Kind::UnknownUnit
            })
        })?;
        Ok(GrpcTimeout {
            value: parse_digits(digits)?,
            unit,
        })
    }
}

/// Parses the number part by hand: `u32::from_str` would accept a leading `+`, which the wire
/// format does not allow.
fn parse_digits(digits: &[u8]) -> Result<u32, ParseTimeoutError> {
    if digits.is_empty() {
        return Err(ParseTimeoutError::new(Kind::MissingValue));
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ParseTimeoutError::new(Kind::InvalidDigit));
    }
    if digits.len() > MAX_DIGITS {
        return Err(ParseTimeoutError::new(Kind::TooManyDigits));
    }
    Ok(digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0')))
}

/// Encodes a timeout in the `grpc-timeout` wire format, rounding down.
///
/// The unit is the finest one, nanoseconds first, in which the timeout fits in 8 digits. The
/// timeout is rounded down to a whole number of that unit, so the receiver never gets more
/// time than `timeout` and loses less than one unit (see
/// [Rounding](crate::propagate#rounding) for why). `Duration::ZERO` encodes as `0n`, which the
/// receiver reads as "already expired". A timeout beyond 99999999 hours saturates to
/// `99999999H`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::propagate::encode_timeout;
///
/// assert_eq!(encode_timeout(Duration::from_millis(20)).to_string(), "20000000n");
/// assert_eq!(encode_timeout(Duration::from_millis(200)).to_string(), "200000u");
/// // 3.0000004 s does not fit in 8 digits of nanoseconds; the 400 ns are rounded away.
/// assert_eq!(encode_timeout(Duration::new(3, 400)).to_string(), "3000000u");
/// assert_eq!(encode_timeout(Duration::ZERO).to_string(), "0n");
/// assert_eq!(encode_timeout(Duration::MAX).to_string(), "99999999H");
/// ```
#[must_use]
pub fn encode_timeout(timeout: Duration) -> GrpcTimeout {
    let nanos = timeout.as_nanos();
    Unit::FINEST_FIRST
        .into_iter()
        .find_map(|unit| {
            let value = u32::try_from(nanos / unit.nanos()).ok()?;
            (value <= MAX_VALUE).then_some(GrpcTimeout { value, unit })
        })
        .unwrap_or(GrpcTimeout {
            value: MAX_VALUE,
            unit: Unit::Hours,
        })
}

/// Decodes a `grpc-timeout` header value into the timeout it stands for.
///
/// The value is 1 to 8 ASCII digits followed by one unit letter: `H` (hours), `M` (minutes),
/// `S` (seconds), `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds). Nothing else is
/// accepted: no sign, no spaces (trim the header first if your HTTP library does not), no
/// decimal point. A zero timeout is valid and means "already expired".
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::propagate::decode_timeout;
///
/// assert_eq!(decode_timeout("250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(decode_timeout("0n"), Ok(Duration::ZERO));
/// assert!(decode_timeout("1.5S").is_err());
/// ```
///
/// # Errors
///
/// Returns a [`ParseTimeoutError`] if `s` is empty, has no unit or an unknown one, has no
/// digits or more than 8, or has any other character.
pub fn decode_timeout(s: &str) -> Result<Duration, ParseTimeoutError> {
    s.parse().map(GrpcTimeout::to_duration)
}

/// Returns the time left until the deadline in force, or `None` when there is none.
///
/// The deadline is [`current_effective_deadline`]. The result is zero once it has passed, and
/// inside a cancelled scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{move_on_after, propagate::remaining};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// assert_eq!(remaining(), None);
/// move_on_after(Duration::from_secs(2), async {
///     tokio::time::advance(Duration::from_millis(500)).await;
///     assert_eq!(remaining(), Some(Duration::from_millis(1500)));
/// })
/// .await;
/// # }
/// ```
///
/// [`current_effective_deadline`]: crate::current_effective_deadline
#[must_use]
pub fn remaining() -> Option<Duration> {
    let deadline = current_effective_deadline()?;
    Some(deadline.saturating_duration_since(Instant::now()))
}

/// Returns the `grpc-timeout` value to send for the deadline in force, or `None` if there is
/// none.
///
/// With `None`, send no header. The value is [`encode_timeout`] applied to [`remaining`], so it
/// is rounded down, and `0n` once the deadline has passed or the scope has been cancelled.
/// Call it right before sending, since the value shrinks as time passes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{fail_after, propagate::header_value};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let sent = fail_after(Duration::from_secs(5), async {
///     header_value().map(|timeout| timeout.to_string())
/// })
/// .await
/// .unwrap();
/// assert_eq!(sent.as_deref(), Some("5000000u"));
/// # }
/// ```
#[must_use]
pub fn header_value() -> Option<GrpcTimeout> {
    remaining().map(encode_timeout)
}

/// Decodes a received `grpc-timeout` value into the deadline to run the request under.
///
/// The deadline is now plus the timeout, so call this when the request arrives. A timeout too
/// large to add to now gives a deadline about thirty years away, as with
/// [`tokio::time::timeout`]. A timeout of `0` in any unit gives now, which a scope treats as
/// already expired.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{fail_at, propagate::deadline_from_header};
/// use tokio::time::{Instant, sleep};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = deadline_from_header("100m").unwrap();
/// assert_eq!(deadline, Instant::now() + Duration::from_millis(100));
///
/// let slow = fail_at(deadline, sleep(Duration::from_secs(1))).await;
/// assert!(slow.unwrap_err().is_deadline_reached());
///
/// let expired = deadline_from_header("0n").unwrap();
/// assert!(fail_at(expired, sleep(Duration::from_millis(1))).await.is_err());
/// # }
/// ```
///
/// # Errors
///
/// Returns a [`ParseTimeoutError`] if `s` is not a valid `grpc-timeout` value (see
/// [`decode_timeout`]).
pub fn deadline_from_header(s: &str) -> Result<Instant, ParseTimeoutError> {
    decode_timeout(s).map(deadline_after)
}

/// Error returned when a `grpc-timeout` value is malformed.
///
/// Its message says what is wrong with the value. It does not repeat the value, which came
/// from the network.
///
/// # Examples
///
/// ```
/// use quattro::propagate::decode_timeout;
///
/// let err = decode_timeout("10").unwrap_err();
/// assert_eq!(err.to_string(), "grpc-timeout value has no unit");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ParseTimeoutError {
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Empty,
    MissingUnit,
    UnknownUnit,
    MissingValue,
    InvalidDigit,
    TooManyDigits,
}

impl ParseTimeoutError {
    fn new(kind: Kind) -> ParseTimeoutError {
        ParseTimeoutError { kind }
    }
}

impl fmt::Debug for ParseTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParseTimeoutError")
            .field(&self.kind)
            .finish()
    }
}

impl fmt::Display for ParseTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Empty => "empty grpc-timeout value",
            Kind::MissingUnit => "grpc-timeout value has no unit",
            Kind::UnknownUnit => "unknown grpc-timeout unit (expected one of H, M, S, m, u, n)",
            Kind::MissingValue => "grpc-timeout value has no digits",
            Kind::InvalidDigit => "grpc-timeout value has a character that is not an ASCII digit",
            Kind::TooManyDigits => "grpc-timeout value has more than 8 digits",
        })
    }
}

impl std::error::Error for ParseTimeoutError {}
