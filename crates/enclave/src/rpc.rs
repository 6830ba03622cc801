//! The messages enclaves exchange through their hosts, and their dispatch
//! onto [`EnclaveService`]. Canonical bytes are borsh; a request that does
//! not decode is refused before it reaches the service.

use crate::attestation::Quote;
use crate::auctioneer::SlotReport;
use crate::committee::GroupPublicKey;
use crate::epoch::EpochKeyShare;
use crate::service::{
    CatchUp, EnclaveService, Purpose, SealedDkgPackage, ServiceError, SignedPackage, SigningRound,
};
use borsh::{BorshDeserialize, BorshSerialize};
use quartier_types::{AccountId, RegionId, Slot};
use std::collections::BTreeMap;

/// The largest request accepted (a DKG round for a 16-member committee fits).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The largest answer a host takes from a peer's enclave (a catch-up
/// state, the largest, holds the prepaid ledgers of a few thousand
/// households).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A request from another member's host (or this enclave's own).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Request {
    /// DKG round 1 as member `index` of the committee of these members.
    DkgRound1 {
        /// This member's index.
        index: u16,
        /// The threshold.
        t: u16,
        /// The coordinator's attempt at this committee's DKG: a member
        /// that has not confirmed a key starts over only for a later one.
        attempt: u64,
        /// The chain the committee serves (its genesis hash): bound into
        /// every report and epoch key it signs and every order it takes.
        chain: [u8; 32],
        /// Every member's quote (identity key ‖ account), by index.
        members: Vec<Quote>,
        /// The first member's invitation (see [`EnclaveService::invite`]).
        invitation: [u8; 64],
    },
    /// DKG round 2 with every member's round-1 package.
    DkgRound2 {
        /// Round-1 packages by member index, each with its member's
        /// account signature.
        round1: BTreeMap<u16, SignedPackage>,
    },
    /// DKG round 3 with every round-2 package (each member opens its own).
    DkgFinish {
        /// The round-1 set round 2 ran with
        /// ([`crate::service::round1_digest`]).
        round1: [u8; 32],
        /// All sealed round-2 packages.
        packages: Vec<SealedDkgPackage>,
    },
    /// Take an epoch secret sealed to this member.
    ReceiveEpochKey {
        /// The share.
        share: EpochKeyShare,
        /// The epoch's public key.
        public_key: [u8; 32],
    },
    /// Signing round 1.
    SignCommit {
        /// The session id (chosen by the coordinator).
        session: u64,
        /// What to sign.
        purpose: Purpose,
        /// The coordinating member's index.
        by: u16,
        /// Its account signature (see [`EnclaveService::authorise`]).
        signature: [u8; 64],
    },
    /// Signing round 2.
    SignShare {
        /// The session id.
        session: u64,
        /// The signing package.
        package: Vec<u8>,
        /// The coordinating member's index.
        by: u16,
        /// Its account signature over the package.
        signature: [u8; 64],
    },
    /// This member's clearing state, sealed to the member with identity `to`.
    CatchUp {
        /// The rejoining member's identity key.
        to: [u8; 32],
    },
    /// A report this member computed (its receipts are public).
    Report {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
    },
    /// DKG confirmation: every member finished with the same key. Only
    /// then does the member hold it as its committee's key.
    DkgConfirm {
        /// The round-1 set the DKG finished with.
        round1: [u8; 32],
        /// Every member's account signature over its finish (by index,
        /// see [`crate::service::finish_message`]).
        signatures: Vec<[u8; 64]>,
    },
    /// Prove which account this enclave is, at which address: its host
    /// maps peers to committee members only by a signature over a fresh
    /// `nonce` and the URL it dialled (a peer that claims another member's
    /// account gets none of its requests; one that relays the challenge to
    /// that member gets a signature over another URL). The enclave's host
    /// answers only for a `url` it serves.
    Identify {
        /// The challenge.
        nonce: [u8; 32],
        /// The URL the caller dialled.
        url: String,
    },
}

/// The tag of what an enclave signs to prove which account it is
/// ([`Request::Identify`]).
pub const TAG_IDENTIFY: &str = "QUARTIER_ENCLAVE_IDENTIFY";

/// What an enclave signs with its account key for [`Request::Identify`]
/// with `nonce`, dialled at `url`.
pub fn identify_message(nonce: &[u8; 32], url: &str) -> quartier_types::hash::Digest {
    let url = quartier_types::hash::tagged(TAG_IDENTIFY, &[url.as_bytes()]);
    quartier_types::hash::tagged(TAG_IDENTIFY, &[nonce, &url.0])
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Response {
    /// A round-1 package and its account signature.
    DkgRound1(Vec<u8>, [u8; 64]),
    /// Sealed round-2 packages.
    DkgRound2(Vec<SealedDkgPackage>),
    /// The group key, and the member's account signature over its finish
    /// ([`crate::service::finish_message`]).
    DkgFinished(GroupPublicKey, [u8; 64]),
    /// The epoch key was taken.
    EpochKeyReceived,
    /// Commitments: (member index, bytes, the member's account signature
    /// over them, see [`crate::service::answer_message`]).
    Committed(u16, Vec<u8>, [u8; 64]),
    /// A signature share and the member's account signature over it.
    Share(Vec<u8>, [u8; 64]),
    /// A report, if this member has it.
    Report(Option<SlotReport>),
    /// A clearing state for a rejoining member.
    CatchUp(CatchUp),
    /// Refused, and why.
    Refused(String),
    /// Every member finished with this group key: it is the member's.
    DkgConfirmed(GroupPublicKey),
    /// The enclave's account and its signature over the challenge
    /// ([`identify_message`]).
    Identity(AccountId, [u8; 64]),
}

impl EnclaveService {
    /// Answers one request.
    pub fn handle(&mut self, request: Request) -> Response {
        let answer = match request {
            Request::DkgRound1 {
                index,
                t,
                attempt,
                chain,
                members,
                invitation,
            } => self
                .dkg_round1(index, t, attempt, chain, members, &invitation)
                .map(|(package, signature)| Response::DkgRound1(package, signature)),
            Request::DkgRound2 { round1 } => self.dkg_round2(&round1).map(Response::DkgRound2),
            Request::DkgFinish { round1, packages } => self
                .dkg_finish(&quartier_types::hash::Digest(round1), &packages)
                .map(|(key, signature)| Response::DkgFinished(key, signature)),
            Request::DkgConfirm { round1, signatures } => self
                .dkg_confirm(&quartier_types::hash::Digest(round1), &signatures)
                .map(Response::DkgConfirmed),
            Request::ReceiveEpochKey { share, public_key } => self
                .receive_epoch_key(&share, &public_key)
                .map(|()| Response::EpochKeyReceived),
            Request::SignCommit {
                session,
                purpose,
                by,
                signature,
            } => self
                .sign_commit(session, &purpose, by, &signature)
                .and_then(|(i, c)| {
                    let about = borsh::to_vec(&purpose).map_err(|_| ServiceError::Invalid)?;
                    let signed =
                        self.sign_answer((session, by), SigningRound::Commit, &about, &c)?;
                    Ok(Response::Committed(i, c, signed))
                }),
            Request::SignShare {
                session,
                package,
                by,
                signature,
            } => self
                .sign_share(session, &package, by, &signature)
                .and_then(|share| {
                    let signed =
                        self.sign_answer((session, by), SigningRound::Share, &package, &share)?;
                    Ok(Response::Share(share, signed))
                }),
            Request::CatchUp { to } => self.catch_up_for(&to).map(Response::CatchUp),
            Request::Identify { nonce, url } => {
                let signature = ed25519_dalek::Signer::sign(
                    self.account_key(),
                    &identify_message(&nonce, &url).0,
                );
                Ok(Response::Identity(self.account(), signature.to_bytes()))
            }
            Request::Report { region, slot } => {
                Ok(Response::Report(self.report(region, slot).cloned()))
            }
        };
        answer.unwrap_or_else(|e| Response::Refused(e.to_string()))
    }
}

/// Decodes a request's canonical bytes.
///
/// # Errors
/// `None` for oversized, malformed or trailing bytes.
pub fn decode_request(bytes: &[u8]) -> Option<Request> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return None;
    }
    borsh::from_slice(bytes).ok()
}

/// Decodes an answer's canonical bytes, as a host takes them from a peer.
///
/// # Errors
/// `None` for oversized, malformed or trailing bytes.
pub fn decode_response(bytes: &[u8]) -> Option<Response> {
    if bytes.len() > MAX_RESPONSE_BYTES {
        return None;
    }
    borsh::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report
    use super::*;

    /// Wire-format conformance: the canonical bytes of fixed requests, as
    /// hosts send them to each other's enclaves (every variant but
    /// `ReceiveEpochKey`, whose share is sealed with fresh randomness). It fails when the RPC
    /// format changes: enclaves of two builds would then not understand
    /// each other, so it must be a decision (update the fixture from the
    /// `computed` value and say why), never an accident.
    #[test]
    fn the_request_encoding_is_fixed() {
        let requests = [
            Request::Identify {
                nonce: [3; 32],
                url: "http://127.0.0.1:7501".into(),
            },
            Request::Report {
                region: RegionId(1),
                slot: Slot(42),
            },
            Request::DkgRound1 {
                index: 1,
                t: 2,
                attempt: 3,
                chain: [4; 32],
                members: Vec::new(),
                invitation: [5; 64],
            },
            Request::DkgRound2 {
                round1: BTreeMap::new(),
            },
            Request::DkgFinish {
                round1: [6; 32],
                packages: Vec::new(),
            },
            Request::SignCommit {
                session: 7,
                purpose: crate::service::Purpose::Report {
                    region: RegionId(1),
                    slot: Slot(8),
                },
                by: 2,
                signature: [9; 64],
            },
            Request::SignShare {
                session: 10,
                package: vec![1, 2, 3],
                by: 0,
                signature: [11; 64],
            },
            Request::CatchUp { to: [12; 32] },
            Request::DkgConfirm {
                round1: [13; 32],
                signatures: vec![[14; 64]],
            },
        ];
        let bytes: Vec<u8> = requests
            .iter()
            .flat_map(|r| borsh::to_vec(r).unwrap())
            .collect();
        // A tagged SHA-256 of the bytes, so that the fixture stays short.
        let computed =
            hex::encode(quartier_types::hash::tagged("QUARTIER_TEST_FIXTURE", &[&bytes]).0);
        assert_eq!(
            computed, "6f18c0ae7ea812df3383488a64ab52d78f48668b69b95fa4c11446bb24b8970a",
            "the enclave RPC's encoding changed (computed {computed})"
        );
        for r in &requests {
            assert_eq!(decode_request(&borsh::to_vec(r).unwrap()).as_ref(), Some(r));
        }
    }
}
