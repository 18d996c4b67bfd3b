use std::time::Duration;

use proptest::prelude::*;
use quattro::propagate::{
    GrpcTimeout, deadline_from_header, decode_timeout, encode_timeout, header_value, remaining,
};
use quattro::{CancelScope, current_effective_deadline, fail_after, fail_at, move_on_after};
use tokio::time::{Instant, advance};

const SEC: u64 = 1_000_000_000;
const MAX_NANOS: u128 = 99_999_999 * 3600 * SEC as u128;

fn nanos(n: u128) -> Duration {
    let sec = u128::from(SEC);
    Duration::new(
        u64::try_from(n / sec).unwrap(),
        u32::try_from(n % sec).unwrap(),
    )
}

fn encoded(d: Duration) -> String {
    encode_timeout(d).to_string()
}

/// The length of one unit of an encoded value, read from its unit letter.
fn unit_of(wire: &str) -> Duration {
    let letter = wire.chars().last().unwrap();
    decode_timeout(&format!("1{letter}")).unwrap()
}

// Each unit, at the largest value it can hold and at the first value that does not fit.
#[test]
fn encode_at_every_unit_boundary() {
    let cases: &[(u128, &str)] = &[
        (0, "0n"),
        (1, "1n"),
        (99_999_999, "99999999n"),
        (100_000_000, "100000u"),
        (100_000_999, "100000u"),
        (99_999_999_000, "99999999u"),
        (99_999_999_999, "99999999u"),
        (100_000_000_000, "100000m"),
        (99_999_999_000_000, "99999999m"),
        (99_999_999_999_999, "99999999m"),
        (100_000_000_000_000, "100000S"),
        (99_999_999 * 1_000_000_000, "99999999S"),
        (100_000_000 * 1_000_000_000, "1666666M"),
        (99_999_999 * 60 * 1_000_000_000, "99999999M"),
        (100_000_000 * 60 * 1_000_000_000, "1666666H"),
        (MAX_NANOS, "99999999H"),
        (MAX_NANOS + 3600 * 1_000_000_000, "99999999H"),
    ];
    for &(n, wire) in cases {
        assert_eq!(encoded(nanos(n)), wire, "{n} ns");
    }
}

#[test]
fn round_trip_of_exact_values() {
    for d in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_nanos(99_999_999),
        Duration::from_micros(99_999_999),
        Duration::from_millis(99_999_999),
        Duration::from_secs(99_999_999),
        Duration::from_secs(99_999_999 * 60),
        Duration::from_secs(99_999_999 * 3600),
        Duration::from_secs(1),
        Duration::from_millis(1500),
    ] {
        assert_eq!(encode_timeout(d).to_duration(), d, "{d:?}");
        assert_eq!(decode_timeout(&encoded(d)), Ok(d), "{d:?}");
    }
}

#[test]
fn max_of_every_unit_decodes() {
    let cases = [
        ("99999999n", Duration::from_nanos(99_999_999)),
        ("99999999u", Duration::from_micros(99_999_999)),
        ("99999999m", Duration::from_millis(99_999_999)),
        ("99999999S", Duration::from_secs(99_999_999)),
        ("99999999M", Duration::from_secs(99_999_999 * 60)),
        ("99999999H", Duration::from_secs(99_999_999 * 3600)),
    ];
    for (wire, d) in cases {
        assert_eq!(decode_timeout(wire), Ok(d), "{wire}");
        let parsed: GrpcTimeout = wire.parse().unwrap();
        assert_eq!(parsed.to_string(), wire);
    }
}

#[test]
fn encode_picks_the_finest_unit() {
    // Whole seconds, minutes and hours still go out in the finest unit that holds them, so the
    // receiver gets the exact value.
    assert_eq!(encoded(Duration::from_secs(1)), "1000000u");
    assert_eq!(encoded(Duration::from_secs(60)), "60000000u");
    assert_eq!(encoded(Duration::from_secs(3600)), "3600000m");
    assert_eq!(encoded(Duration::from_millis(99)), "99000000n");
}

#[test]
fn encode_rounds_down() {
    // 100 s + 999 us: milliseconds are needed, the 999 us are dropped, not rounded up.
    let d = Duration::from_secs(100) + Duration::from_micros(999);
    assert_eq!(encoded(d), "100000m");
    assert!(encode_timeout(d).to_duration() <= d);
}

#[test]
fn duration_max_saturates() {
    let timeout = encode_timeout(Duration::MAX);
    assert_eq!(timeout.to_string(), "99999999H");
    assert_eq!(
        timeout.to_duration(),
        Duration::from_secs(99_999_999 * 3600)
    );
}

#[test]
fn zero_is_expired() {
    assert!(encode_timeout(Duration::ZERO).is_expired());
    assert!("0H".parse::<GrpcTimeout>().unwrap().is_expired());
    assert!(!encode_timeout(Duration::from_nanos(1)).is_expired());
}

#[test]
fn leading_zeros_are_accepted() {
    assert_eq!(decode_timeout("00000001S"), Ok(Duration::from_secs(1)));
    assert_eq!(decode_timeout("00000000n"), Ok(Duration::ZERO));
}

const UNKNOWN_UNIT: &str = "unknown grpc-timeout unit (expected one of H, M, S, m, u, n)";
const NOT_A_DIGIT: &str = "grpc-timeout value has a character that is not an ASCII digit";
const TOO_LONG: &str = "grpc-timeout value has more than 8 digits";

#[test]
fn malformed_values_are_rejected() {
    let cases = [
        ("", "empty grpc-timeout value"),
        ("10", "grpc-timeout value has no unit"),
        ("S", "grpc-timeout value has no digits"),
        ("123456789S", TOO_LONG),
        ("99999999999999999999999999H", TOO_LONG),
        ("000000001n", TOO_LONG),
        ("10x", UNKNOWN_UNIT),
        ("10s", UNKNOWN_UNIT),
        ("10h", UNKNOWN_UNIT),
        ("10µ", UNKNOWN_UNIT),
        ("1S ", UNKNOWN_UNIT),
        ("+1S", NOT_A_DIGIT),
        ("-1S", NOT_A_DIGIT),
        (" 1S", NOT_A_DIGIT),
        ("1 S", NOT_A_DIGIT),
        ("1.5S", NOT_A_DIGIT),
        ("１S", NOT_A_DIGIT),
        ("é1S", NOT_A_DIGIT),
        ("1_000S", NOT_A_DIGIT),
    ];
    for (wire, message) in cases {
        let err = decode_timeout(wire).expect_err(wire);
        assert_eq!(err.to_string(), message, "{wire:?}");
        assert_eq!(deadline_from_header(wire).unwrap_err(), err);
        assert_eq!(wire.parse::<GrpcTimeout>().unwrap_err(), err);
    }
}

#[test]
fn error_is_a_std_error() {
    let err: Box<dyn std::error::Error + Send + Sync> = decode_timeout("").unwrap_err().into();
    assert_eq!(err.to_string(), "empty grpc-timeout value");
    assert!(format!("{err:?}").starts_with("ParseTimeoutError"));
}

#[test]
fn debug_shows_the_wire_form() {
    assert_eq!(
        format!("{:?}", encode_timeout(Duration::from_millis(200))),
        "GrpcTimeout(200000u)"
    );
}

#[tokio::test(start_paused = true)]
async fn no_deadline_outside_scopes() {
    assert_eq!(remaining(), None);
    assert_eq!(header_value(), None);
    // A scope without a deadline adds none.
    let inside = CancelScope::new()
        .move_on(async { (remaining(), header_value()) })
        .await;
    assert_eq!(inside, Some((None, None)));
}

#[tokio::test(start_paused = true)]
async fn remaining_follows_nested_scopes() {
    move_on_after(Duration::from_secs(10), async {
        advance(Duration::from_secs(1)).await;
        assert_eq!(remaining(), Some(Duration::from_secs(9)));
        assert_eq!(header_value().unwrap().to_string(), "9000000u");

        move_on_after(Duration::from_secs(2), async {
            assert_eq!(remaining(), Some(Duration::from_secs(2)));
            advance(Duration::from_millis(500)).await;
            assert_eq!(remaining(), Some(Duration::from_millis(1500)));
            assert_eq!(header_value().unwrap().to_string(), "1500000u");
        })
        .await
        .unwrap();

        // A later inner deadline leaves the outer one in force.
        fail_after(Duration::from_secs(60), async {
            assert_eq!(remaining(), Some(Duration::from_millis(8500)));
        })
        .await
        .unwrap();

        advance(Duration::from_millis(8499)).await;
        assert_eq!(header_value().unwrap().to_string(), "1000000n");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn passed_deadline_sends_zero() {
    let past = Instant::now() - Duration::from_secs(1);
    // A future that finishes without suspending runs even though its deadline has passed;
    // what it would send must then say "expired".
    let sent = fail_at(past, async { (remaining(), header_value()) })
        .await
        .unwrap();
    assert_eq!(sent.0, Some(Duration::ZERO));
    let sent = sent.1.unwrap();
    assert_eq!(sent.to_string(), "0n");
    assert!(sent.is_expired());
}

#[tokio::test(start_paused = true)]
async fn cancelled_scope_sends_zero() {
    let scope = CancelScope::new();
    let inner = scope.clone();
    let sent = scope
        .fail(async move {
            inner.cancel();
            header_value()
        })
        .await
        .unwrap();
    assert_eq!(sent.map(|t| t.to_string()).as_deref(), Some("0n"));
}

#[tokio::test(start_paused = true)]
async fn server_sees_the_client_deadline() {
    let (client_deadline, wire) = move_on_after(Duration::from_millis(250), async {
        advance(Duration::from_millis(40)).await;
        (
            current_effective_deadline().unwrap(),
            header_value().unwrap().to_string(),
        )
    })
    .await
    .unwrap();
    assert_eq!(wire, "210000u");

    // No time passes in transit on the paused clock, so the server's deadline is the client's.
    let deadline = deadline_from_header(&wire).unwrap();
    assert_eq!(deadline, client_deadline);
    let seen = fail_at(deadline, async { current_effective_deadline() })
        .await
        .unwrap();
    assert_eq!(seen, Some(client_deadline));
}

#[tokio::test(start_paused = true)]
async fn zero_header_is_already_expired() {
    let deadline = deadline_from_header("0n").unwrap();
    assert_eq!(deadline, Instant::now());
    let out = fail_at(deadline, tokio::time::sleep(Duration::from_nanos(1))).await;
    assert!(out.unwrap_err().is_deadline_reached());
}

#[tokio::test(start_paused = true)]
async fn largest_header_does_not_overflow() {
    let deadline = deadline_from_header("99999999H").unwrap();
    assert!(deadline > Instant::now() + Duration::from_secs(86400 * 365 * 20));
}

/// Durations spread over every unit: a random number of bits, then a random value of that size,
/// up to 99999999 hours.
fn any_timeout() -> impl Strategy<Value = Duration> {
    (0u32..=69, any::<u128>()).prop_map(|(bits, raw)| {
        let n = if bits == 0 { 0 } else { raw >> (128 - bits) };
        nanos(n.min(MAX_NANOS))
    })
}

proptest! {
    #[test]
    fn round_trip_loses_less_than_one_unit(d in any_timeout()) {
        let timeout = encode_timeout(d);
        let wire = timeout.to_string();
        let back = decode_timeout(&wire).unwrap();
        prop_assert_eq!(back, timeout.to_duration());
        // Rounded down: never more time than there is, and less than one unit less.
        prop_assert!(back <= d, "{wire} gives {back:?} > {d:?}");
        prop_assert!(d - back < unit_of(&wire), "{wire} loses too much of {d:?}");
        prop_assert!(wire.len() <= 9);
    }

    #[test]
    fn encode_uses_the_finest_unit_that_fits(d in any_timeout()) {
        let wire = encoded(d);
        let finer = match wire.chars().last().unwrap() {
            'n' => return Ok(()),
            'u' => Duration::from_nanos(1),
            'm' => Duration::from_micros(1),
            'S' => Duration::from_millis(1),
            'M' => Duration::from_secs(1),
            'H' => Duration::from_secs(60),
            other => panic!("unexpected unit {other}"),
        };
        prop_assert!(d.as_nanos() / finer.as_nanos() > 99_999_999, "{wire} for {d:?}");
    }

    #[test]
    fn valid_values_survive_a_reencode(wire in "[0-9]{1,8}[HMSmun]") {
        let d = decode_timeout(&wire).unwrap();
        prop_assert_eq!(decode_timeout(&encoded(d)), Ok(d));
    }

    #[test]
    fn decode_never_panics(s in any::<String>()) {
        if let Ok(d) = decode_timeout(&s) {
            prop_assert!(d <= Duration::from_secs(99_999_999 * 3600));
            prop_assert!(s.len() >= 2 && s.len() <= 9 && s.is_ascii());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 17, item 3: the client/server round trip through the deadline in force, and a fuzz of
// the three entry points with a reference parser as oracle.

/// The reference grammar: 1 to 8 ASCII digits, then one of `HMSmun`; the timeout it means.
fn reference_decode(s: &str) -> Option<Duration> {
    let b = s.as_bytes();
    let (&unit, digits) = b.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u64 = s[..digits.len()].parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(v * 3600),
        b'M' => Duration::from_secs(v * 60),
        b'S' => Duration::from_secs(v),
        b'm' => Duration::from_millis(v),
        b'u' => Duration::from_micros(v),
        b'n' => Duration::from_nanos(v),
        _ => return None,
    })
}

/// Checks the three entry points on `s` against the reference; never panics (a panic fails
/// the property).
fn check_against_reference(s: &str) -> Result<(), TestCaseError> {
    let want = reference_decode(s);
    let decoded = decode_timeout(s);
    let parsed = s.parse::<GrpcTimeout>();
    let now = Instant::now();
    let deadline = deadline_from_header(s);
    let after = Instant::now();
    match want {
        Some(d) => {
            prop_assert_eq!(decoded.clone(), Ok(d), "{:?}", s);
            let parsed = parsed.expect("valid");
            prop_assert_eq!(parsed.to_duration(), d);
            prop_assert_eq!(parsed.is_expired(), d.is_zero());
            // Display is the canonical form: no leading zeros, same unit.
            let canonical = parsed.to_string();
            prop_assert_eq!(canonical.as_bytes().last(), s.as_bytes().last());
            prop_assert_eq!(decode_timeout(&canonical), Ok(d));
            prop_assert!(canonical.len() <= s.len());
            let deadline = deadline.expect("valid");
            match now.checked_add(d) {
                Some(lo) if after.checked_add(d).is_some() => {
                    prop_assert!(lo <= deadline && deadline <= after + d, "{:?}", s)
                }
                _ => prop_assert!(deadline > now + Duration::from_secs(20 * 365 * 86400)),
            }
        }
        None => {
            let e1 = decoded.expect_err("invalid");
            let e2 = parsed.expect_err("invalid");
            let e3 = deadline.expect_err("invalid");
            // The same error from each entry point, a short message, a std error.
            prop_assert_eq!(&e1, &e2);
            prop_assert_eq!(&e1, &e3);
            let msg = e1.to_string();
            prop_assert!(msg.len() < 100 && msg.contains("grpc-timeout"), "{}", msg);
            let _: &dyn std::error::Error = &e1;
        }
    }
    Ok(())
}

/// Strings near the grammar: digits, signs, spaces, dots, letters close to the units, and
/// some non-ASCII digits, up to 12 characters.
fn near_grammar() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::char::range('0', '9'),
            3 => proptest::sample::select(vec!['H', 'M', 'S', 'm', 'u', 'n']),
            1 => proptest::sample::select(vec![
                ' ', '+', '-', '.', 'h', 's', 'U', 'N', 'µ', '٣', '０', '\0', '\t', 'e', '_',
            ]),
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_bytes_match_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let s = String::from_utf8_lossy(&bytes);
        check_against_reference(&s)?;
    }

    #[test]
    fn fuzz_near_grammar_strings_match_the_reference(s in near_grammar()) {
        check_against_reference(&s)?;
    }

    #[test]
    fn fuzz_valid_values_with_one_byte_changed(
        wire in "[0-9]{1,8}[HMSmun]",
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        check_against_reference(&wire)?;
        let mut bytes = wire.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        check_against_reference(&String::from_utf8_lossy(&bytes))?;
        // Inserted and appended characters too.
        bytes.insert(i, byte);
        check_against_reference(&String::from_utf8_lossy(&bytes))?;
    }

    /// Client side under a deadline `d` away, `elapsed` later; server side decodes the header:
    /// the server's deadline is never later than the client's and earlier by less than one
    /// unit of the encoding; `header_value` is `encode_timeout(remaining())`.
    #[test]
    fn header_value_and_deadline_from_header_round_trip(
        d in any_timeout(),
        elapsed_permille in 0u64..=1200,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let scope = CancelScope::with_timeout(d);
            let client_deadline = scope.deadline().unwrap();
            let out = scope.move_on(async move {
                // A fraction of the timeout passes (beyond it too: the scope does not get
                // to cancel, nothing suspends).
                let e = d.mul_f64(elapsed_permille as f64 / 1000.0).min(Duration::from_secs(10 * 365 * 86400));
                if !e.is_zero() {
                    advance(e).await;
                }
                let left = remaining().expect("a deadline is in force");
                prop_assert_eq!(left, client_deadline.saturating_duration_since(Instant::now()));
                let header = header_value().expect("a deadline is in force");
                prop_assert_eq!(header, encode_timeout(left));
                let wire = header.to_string();
                prop_assert_eq!(header.is_expired(), left.is_zero(), "{}", wire);
                let server_deadline = deadline_from_header(&wire).unwrap();
                if left.is_zero() {
                    // `0n` is "now" on the server: the time is up there too.
                    prop_assert_eq!(server_deadline, Instant::now());
                    return Ok(());
                }
                prop_assert!(server_deadline <= client_deadline, "{} for {:?} left", wire, left);
                prop_assert!(client_deadline - server_deadline < unit_of(&wire), "{} for {:?} left", wire, left);
                // The server, running under that deadline, sends on at most as much.
                let again = fail_at(server_deadline, async { header_value() }).await;
                if let Ok(Some(again)) = again {
                    prop_assert!(again.to_duration() <= header.to_duration());
                }
                Ok(())
            });
            // Cancelled only if the deadline passed and the server's `fail_at` suspended.
            match out.await {
                Some(r) => r,
                None => Ok(()),
            }
        })?;
    }
}
