//! Key choice: uniform, or YCSB's scrambled Zipfian (Gray et al., "Quickly
//! Generating Billion-Record Synthetic Databases"): item ranks follow a
//! Zipfian law with exponent `theta`, and each rank is hashed (FNV-1a) onto
//! the key space so the hot keys are spread out rather than adjacent.

use rand::Rng;

/// Draws ranks in `0..n` with P(rank i) ∝ 1 / (i + 1)^theta.
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        assert!(
            n > 0 && theta > 0.0 && theta < 1.0,
            "zipfian needs n > 0 and 0 < theta < 1"
        );
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipfian {
            n,
            theta,
            alpha,
            zeta_n,
            eta,
        }
    }

    /// A rank: 0 is the most popular.
    pub fn rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// A key index: the rank hashed onto `0..n`.
    pub fn scrambled(&self, rng: &mut impl Rng) -> u64 {
        fnv1a(self.rank(rng)) % self.n
    }
}

fn fnv1a(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn skewed_like_ycsb() {
        let z = Zipfian::new(10_000, 0.99);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..100_000 {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        // Rank 0 takes 1/zeta(n) of the draws (about 10% for n = 10,000).
        let top = counts[0] as f64 / 100_000.0;
        assert!((0.08..0.13).contains(&top), "rank 0 drew {top}");
        assert!(counts[0] > counts[1] && counts[1] > counts[100]);
        // The scrambled keys cover the key space, not just its start.
        let hi = (0..1000).filter(|_| z.scrambled(&mut rng) >= 5_000).count();
        assert!(
            hi > 200,
            "scrambled keys stay low: {hi}/1000 above the middle"
        );
    }
}
