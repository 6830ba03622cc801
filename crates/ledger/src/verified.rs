//! A memo of the proofs that verified, so a validator checks each ring
//! signature and range proof once, not at admission, in every proposal that
//! retries it and again in the block that holds it.
//!
//! What is remembered is a SHA-256 digest over a domain tag and every input
//! of the verification (the ring's keys and commitments, the key image, the
//! pseudo-output, the signature bytes and the message; the commitments and
//! the range proof's bytes). The checks are deterministic functions of these
//! inputs, so a hit returns what verifying again would return: the memo
//! changes how fast a validator is, never what it accepts. Only successes
//! are kept (a forger can not fill it with its failures) and at most
//! [`CAPACITY`] of them, the oldest forgotten first. It is not part of the
//! state: not committed, not in snapshots, shared by every clone of a state.

use sha2::{Digest as _, Sha256};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Proofs remembered: a few slots of a large region's orders. Each costs
/// about 100 bytes.
const CAPACITY: usize = 1 << 15;

/// The digest of one verification's inputs (see [`statement`]).
pub(crate) type Statement = [u8; 32];

/// Proofs that verified (see the module documentation).
#[derive(Clone, Default)]
pub(crate) struct ProofMemo(Arc<Mutex<Remembered>>);

#[derive(Default)]
struct Remembered {
    known: HashSet<Statement>,
    order: VecDeque<Statement>,
}

impl ProofMemo {
    /// Runs `verify` unless `statement` already verified; remembers it if it
    /// does now.
    ///
    /// # Errors
    /// What `verify` returns.
    pub(crate) fn check<E>(
        &self,
        statement: Statement,
        verify: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        if self.lock().known.contains(&statement) {
            return Ok(());
        }
        verify()?;
        let mut memo = self.lock();
        if memo.known.insert(statement) {
            memo.order.push_back(statement);
            while memo.order.len() > CAPACITY {
                if let Some(old) = memo.order.pop_front() {
                    memo.known.remove(&old);
                }
            }
        }
        Ok(())
    }

    /// Whether `statement` verified before.
    pub(crate) fn knows(&self, statement: &Statement) -> bool {
        self.lock().known.contains(statement)
    }

    /// How many proofs it holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        // A panic while holding the lock leaves a set that is still valid.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ProofMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofMemo({} proofs)", self.len())
    }
}

/// Not part of the state: two states are equal whatever they remember.
impl PartialEq for ProofMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ProofMemo {}

/// The digest of a verification's inputs: `tag`, then each part with its
/// length, so no two different input lists share a digest.
pub(crate) fn statement(tag: &[u8], parts: &[&[u8]]) -> Statement {
    let mut h = Sha256::new();
    h.update((tag.len() as u64).to_le_bytes());
    h.update(tag);
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_not_remembered_and_a_success_is() {
        let memo = ProofMemo::default();
        let s = statement(b"t", &[b"a"]);
        assert_eq!(memo.check(s, || Err::<(), _>("bad")), Err("bad"));
        let mut runs = 0;
        for _ in 0..3 {
            memo.check(s, || {
                runs += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        assert_eq!(runs, 1, "verified once, then remembered");
    }

    #[test]
    fn the_oldest_is_forgotten_beyond_capacity() {
        let memo = ProofMemo::default();
        for i in 0..=CAPACITY as u64 {
            memo.check(statement(b"t", &[&i.to_le_bytes()]), || Ok::<(), ()>(()))
                .unwrap();
        }
        assert_eq!(memo.len(), CAPACITY);
        let mut ran = false;
        memo.check(statement(b"t", &[&0u64.to_le_bytes()]), || {
            ran = true;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(ran, "the first was forgotten");
    }

    #[test]
    fn parts_are_length_delimited() {
        assert_ne!(
            statement(b"t", &[b"ab", b"c"]),
            statement(b"t", &[b"a", b"bc"])
        );
        assert_ne!(statement(b"t", &[b"a"]), statement(b"u", &[b"a"]));
    }
}
