//! Randomness across `rand_core` versions (feature `rng06`).

/// Lets a `rand_core` 0.10 generator drive a crate that takes `rand_core`
/// 0.6 (monero-oxide, FROST).
pub struct Rng06<'a, R>(pub &'a mut R);

impl<R: rand_core::CryptoRng> rand_core_06::RngCore for Rng06<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl<R: rand_core::CryptoRng> rand_core_06::CryptoRng for Rng06<'_, R> {}
