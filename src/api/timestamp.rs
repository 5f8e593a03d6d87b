//! `Timestamp`: a point in the total order of transactions. The upper bits
//! are physical milliseconds (from a node's `Clock`, through the oracle),
//! the low `LOGICAL_BITS` a counter within one millisecond, so a timestamp
//! names a wall time (for backups and `--as-of`) and still increases
//! strictly however fast the oracle hands them out.

use std::fmt;

/// Bits of the logical counter: 262,144 timestamps per millisecond.
pub const LOGICAL_BITS: u32 = 18;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub fn new(physical_ms: u64, logical: u64) -> Timestamp {
        Timestamp((physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK))
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// The next timestamp (saturating).
    pub fn next(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }

    /// The timestamp `ms` milliseconds later (saturating).
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms.saturating_mul(1 << LOGICAL_BITS)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_and_logical_parts_order_as_one_number() {
        let a = Timestamp::new(1_700_000_000_000, 5);
        assert_eq!((a.physical_ms(), a.logical()), (1_700_000_000_000, 5));
        assert!(a < a.next() && a.next() < Timestamp::new(1_700_000_000_001, 0));
        assert_eq!(a.plus_ms(3).physical_ms(), 1_700_000_000_003);
        assert_eq!(a.to_string(), "1700000000000.5");
        assert_eq!(Timestamp::MAX.next(), Timestamp::MAX);
    }
}
