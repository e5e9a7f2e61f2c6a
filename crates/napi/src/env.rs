//! The `ODIRECT_*` environment switches the engine reads (A/B switches for measured defaults,
//! README "Environment"). One spelling for each kind, so a switch cannot read "off" differently
//! from its neighbours.

/// A switch that is on unless the variable is exactly `"0"` (a default that can be turned off).
pub fn on_unless_zero(name: &str) -> bool {
    std::env::var(name).as_deref() != Ok("0")
}

/// A switch that is off unless the variable is exactly `"1"` (an opt-in).
pub fn on_if_one(name: &str) -> bool {
    std::env::var(name).as_deref() == Ok("1")
}

/// A number from the variable, `None` when it is unset or does not parse.
pub fn number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        // Names no one sets, so the test does not depend on the environment it runs in.
        assert!(on_unless_zero("ODIRECT_TEST_UNSET_SWITCH"));
        assert!(!on_if_one("ODIRECT_TEST_UNSET_SWITCH"));
        assert_eq!(number::<u32>("ODIRECT_TEST_UNSET_SWITCH"), None);
    }
}
