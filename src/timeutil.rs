//! Small, total helpers for instant arithmetic.
//!
//! jiff's checked arithmetic returns `Result` (an instant can leave the supported range); for
//! planning we want total functions that clamp at the ends of time instead, so a silly
//! `duration` can never turn into a panic or an error path deep inside a pure function.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `t + d`, clamped to the representable range.
pub fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `t - d`, clamped to the representable range.
pub fn minus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(if d.is_negative() {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// A std duration as a signed one, saturating.
pub fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `t + d` for a std duration.
pub fn plus_std(t: Timestamp, d: Duration) -> Timestamp {
    plus(t, signed(d))
}

/// `t - d` for a std duration.
pub fn minus_std(t: Timestamp, d: Duration) -> Timestamp {
    minus(t, signed(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_instead_of_failing() {
        assert_eq!(
            plus(Timestamp::MAX, SignedDuration::from_hours(1)),
            Timestamp::MAX
        );
        assert_eq!(
            minus(Timestamp::MIN, SignedDuration::from_hours(1)),
            Timestamp::MIN
        );
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(plus_std(t, Duration::from_secs(60)).as_second(), 60);
    }
}
