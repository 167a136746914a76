//! Retry delays: exponential backoff with jitter, so hosts retrying the same failing service do
//! not retry in lockstep.

use std::time::Duration;

/// The delay before attempt `attempt` (2 is the first retry): `base * 2^(attempt-2)`, capped at
/// five minutes, with ±20% jitter from `seed`.
pub fn delay(base: Duration, attempt: u32, seed: u64) -> Duration {
    let exp = attempt.saturating_sub(2).min(16);
    let raw = base
        .saturating_mul(1u32 << exp)
        .min(Duration::from_secs(300));
    // splitmix64: enough spread for jitter; nothing here needs cryptographic randomness.
    let mut z = seed.wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let factor = 0.8 + (z % 10_000) as f64 / 10_000.0 * 0.4;
    raw.mul_f64(factor)
}

/// A seed that differs between processes and hosts.
pub fn seed(host: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let h = blake3::hash(host.as_bytes());
    nanos
        ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
        ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter() {
        let base = Duration::from_secs(1);
        for seed in [1u64, 42, 9_999_999] {
            let d2 = delay(base, 2, seed).as_secs_f64();
            let d4 = delay(base, 4, seed).as_secs_f64();
            assert!((0.8..=1.2).contains(&d2), "{d2}");
            assert!((3.2..=4.8).contains(&d4), "{d4}");
        }
        assert!(delay(base, 40, 7) <= Duration::from_secs(360));
    }

    #[test]
    fn jitter_varies_with_seed() {
        let base = Duration::from_secs(10);
        let a: Vec<_> = (0..20u64).map(|s| delay(base, 2, s)).collect();
        assert!(a.iter().any(|d| *d != a[0]));
    }
}
