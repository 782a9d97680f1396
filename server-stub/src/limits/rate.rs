//! A rate as the flags write it: `N/s` or `N/min`, optionally `,burst=B` (issue 11 "Rate
//! limiting"; PROTOCOL.md §15). It becomes a GCRA [`Quota`] of `governor`: one cell every
//! `1 s / N` (or `60 s / N`), at most `B` cells at once (default `B = N`).

use governor::Quota;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// Largest `N` or `B` a flag may name (10⁹: far above any sane rate, and small enough that
/// `burst × interval` never overflows `governor`'s u64 nanoseconds).
pub const MAX_RATE_COUNT: u32 = 1_000_000_000;

/// The period a rate's count is given per.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// `N/s`.
    Second,
    /// `N/min`.
    Minute,
}

impl Per {
    fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
        }
    }
}

/// A sustained rate with a burst: `count` per `per`, at most `burst` at once.
///
/// Parse with [`Rate::parse`] (the flag format) and print with `Display` (the same format, burst
/// always written): `"20/s,burst=100"`, `"600/min"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Per,
    burst: NonZeroU32,
}

/// Why a rate flag does not parse (shown by clap as the flag's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateParseError {
    /// Not `N/s` or `N/min` with an optional `,burst=B`.
    #[error(
        "expected N/s or N/min, optionally followed by ,burst=B (e.g. 20/s,burst=100); got {0:?}"
    )]
    Format(String),
    /// `N` or `B` is 0, or above [`MAX_RATE_COUNT`], or not a plain decimal number.
    #[error("{what} must be a whole number in 1..={MAX_RATE_COUNT}; got {value:?}")]
    Count {
        /// `"the rate"` or `"burst"`.
        what: &'static str,
        /// The text given.
        value: String,
    },
}

impl Rate {
    /// `count` per second with at most `burst` at once; `None` if either is 0 or above
    /// [`MAX_RATE_COUNT`].
    pub const fn per_second(count: u32, burst: u32) -> Option<Rate> {
        Rate::new(count, Per::Second, burst)
    }

    /// `count` per minute with at most `burst` at once; `None` as for [`Rate::per_second`].
    pub const fn per_minute(count: u32, burst: u32) -> Option<Rate> {
        Rate::new(count, Per::Minute, burst)
    }

    const fn new(count: u32, per: Per, burst: u32) -> Option<Rate> {
        if count > MAX_RATE_COUNT || burst > MAX_RATE_COUNT {
            return None;
        }
        match (NonZeroU32::new(count), NonZeroU32::new(burst)) {
            (Some(count), Some(burst)) => Some(Rate { count, per, burst }),
            _ => None,
        }
    }

    /// Parses the flag format: `N/s` or `N/min`, then optionally `,burst=B`; `N` and `B` are
    /// plain decimal numbers in `1..=`[`MAX_RATE_COUNT`]; no spaces. The burst defaults to `N`.
    ///
    /// Errors: [`RateParseError`] for anything else.
    pub fn parse(s: &str) -> Result<Rate, RateParseError> {
        let format = || RateParseError::Format(s.to_owned());
        let (rate, burst) = match s.split_once(',') {
            None => (s, None),
            Some((rate, rest)) => (rate, Some(rest.strip_prefix("burst=").ok_or_else(format)?)),
        };
        let (count, per) = rate.split_once('/').ok_or_else(format)?;
        let per = match per {
            "s" => Per::Second,
            "min" => Per::Minute,
            _ => return Err(format()),
        };
        let count = parse_count(count, "the rate")?;
        let burst = match burst {
            None => count,
            Some(b) => parse_count(b, "burst")?,
        };
        Ok(Rate { count, per, burst })
    }

    /// The sustained rate, per second (`N/min` gives `N / 60`).
    pub fn per_second_f64(&self) -> f64 {
        f64::from(self.count.get()) / self.per.duration().as_secs_f64()
    }

    /// The burst `B`: how many are allowed at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Time between two cells at the sustained rate (`period / N`, at least 1 ns).
    pub fn interval(&self) -> Duration {
        (self.per.duration() / self.count.get()).max(Duration::from_nanos(1))
    }

    /// The GCRA quota: one cell per [`Rate::interval`], burst [`Rate::burst`].
    pub fn quota(&self) -> Quota {
        // `interval` is never zero, so `with_period` always gives a quota; the fallback keeps
        // this total without a panic path.
        Quota::with_period(self.interval())
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.burst)
    }
}

fn parse_count(s: &str, what: &'static str) -> Result<NonZeroU32, RateParseError> {
    let bad = || RateParseError::Count {
        what,
        value: s.to_owned(),
    };
    // `u32::from_str` would take a leading `+`; only digits are a count here.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_RATE_COUNT)
        .and_then(NonZeroU32::new)
        .ok_or_else(bad)
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{},burst={}",
            self.count,
            self.per.suffix(),
            self.burst
        )
    }
}

impl std::str::FromStr for Rate {
    type Err = RateParseError;

    fn from_str(s: &str) -> Result<Rate, RateParseError> {
        Rate::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_format() {
        let r = Rate::parse("20/s,burst=100").unwrap();
        assert_eq!(r, Rate::per_second(20, 100).unwrap());
        assert_eq!(r.burst(), 100);
        assert_eq!(r.interval(), Duration::from_millis(50));
        assert_eq!(r.to_string(), "20/s,burst=100");
        // Burst defaults to N.
        let r = Rate::parse("600/min").unwrap();
        assert_eq!(r, Rate::per_minute(600, 600).unwrap());
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert!((r.per_second_f64() - 10.0).abs() < 1e-9);
        assert_eq!(r.to_string(), "600/min,burst=600");
        // The largest count still gives a nonzero interval and a quota.
        let r = Rate::parse("1000000000/s,burst=1000000000").unwrap();
        assert_eq!(r.interval(), Duration::from_nanos(1));
        assert_eq!(r.quota().burst_size().get(), MAX_RATE_COUNT);
        let q = Rate::parse("3/min,burst=2").unwrap().quota();
        assert_eq!(q.replenish_interval(), Duration::from_secs(20));
        assert_eq!(q.burst_size().get(), 2);
        // Round trip through Display.
        for s in ["1/s,burst=1", "5000/s,burst=10000", "7/min,burst=3"] {
            assert_eq!(Rate::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "20",
            "20/",
            "/s",
            "20/h",
            "20/sec",
            "20/S",
            " 20/s",
            "20/s ",
            "20 /s",
            "+20/s",
            "-1/s",
            "0/s",
            "20/s,",
            "20/s,burst=",
            "20/s,burst=0",
            "20/s,burst=-1",
            "20/s,burst=+5",
            "20/s,burst=5,",
            "20/s,burst=5,burst=6",
            "20/s;burst=5",
            "20/s,b=5",
            "1.5/s",
            "1e3/s",
            "4294967296/s",
            "1000000001/s",
            "20/s,burst=1000000001",
            "20/s,burst=99999999999999999999",
            "off",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            Rate::parse("0/s"),
            Err(RateParseError::Count {
                what: "the rate",
                ..
            })
        ));
        assert!(matches!(
            Rate::parse("1/s,burst=0"),
            Err(RateParseError::Count { what: "burst", .. })
        ));
        assert!(matches!(Rate::parse("1/h"), Err(RateParseError::Format(_))));
        assert_eq!(Rate::per_second(0, 1), None);
        assert_eq!(Rate::per_second(1, 0), None);
        assert_eq!(Rate::per_minute(MAX_RATE_COUNT + 1, 1), None);
    }
}
