//! Faults within and beyond what BFT tolerates (f = 1 of 4).

use crate::harness::*;
use commonware_consensus::Application;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::{Digested, Digestible as _, ed25519};
use commonware_runtime::{Clock as _, Runner as _, Supervisor as _, deterministic};
use quartier_node::{Block, BlockDigest, LedgerApp, Scheme};
use std::collections::BTreeMap;
use std::time::Duration;

type Roots = BTreeMap<u64, quartier_types::hash::Digest>;

fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(1_200))),
    )
}

fn assert_agree(apps: &[LedgerApp]) {
    let roots: Vec<Roots> = apps.iter().map(LedgerApp::finalized_roots).collect();
    for other in &roots[1..] {
        for (h, root) in other {
            if let Some(first) = roots[0].get(h) {
                assert_eq!(first, root, "roots differ at height {h}");
            }
        }
    }
}

async fn start_network(
    context: &deterministic::Context,
    n: u64,
) -> (
    Vec<ed25519::PrivateKey>,
    Vec<LedgerApp>,
    commonware_p2p::simulated::Oracle<ed25519::PublicKey, deterministic::Context>,
) {
    let keys = validator_keys(n);
    let genesis = genesis(&keys);
    let oracle = network(context, &keys).await;
    let apps: Vec<_> = (0..n).map(|_| app(&genesis)).collect();
    start_all(context, &oracle, &keys, &apps).await;
    (keys, apps, oracle)
}

#[test]
fn n4f1_partitioned_validator_does_not_stop_the_chain_and_catches_up() {
    runner(3).start(|context| async move {
        let (keys, apps, oracle) = start_network(&context, 4).await;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], 5).await;
        partition(&oracle, &keys, &[3], &[0, 1, 2]).await;
        let cut_at = apps[3].view().height;
        // The other three keep finalizing without it.
        wait_for_height(&context, &apps, &[0, 1, 2], cut_at + 30).await;
        assert!(
            apps[3].view().height < cut_at + 30,
            "isolated validator kept finalizing"
        );
        heal(&oracle, &keys, &[3], &[0, 1, 2]).await;
        let target = apps[0].view().height + 5;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], target).await;
        assert_agree(&apps);
    });
}

#[test]
fn n4f2_split_halts_without_forking_and_resumes_after_healing() {
    runner(5).start(|context| async move {
        let (keys, apps, oracle) = start_network(&context, 4).await;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], 5).await;
        partition(&oracle, &keys, &[0, 1], &[2, 3]).await;
        // Let anything already certified land, then nothing more may finalize.
        context.sleep(Duration::from_secs(5)).await;
        let frozen: Vec<u64> = apps.iter().map(|a| a.view().height).collect();
        context.sleep(Duration::from_secs(60)).await;
        let later: Vec<u64> = apps.iter().map(|a| a.view().height).collect();
        assert_eq!(frozen, later, "a minority finalized a block");
        assert_agree(&apps);
        heal(&oracle, &keys, &[0, 1], &[2, 3]).await;
        let target = later.iter().max().copied().unwrap_or(0) + 10;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], target).await;
        assert_agree(&apps);
    });
}

/// Proposes blocks whose state root is wrong; verifies honestly.
#[derive(Clone)]
struct WrongRoot(LedgerApp);

impl Application<deterministic::Context> for WrongRoot {
    type SigningScheme = Scheme;
    type Context = Context<BlockDigest, ed25519::PublicKey>;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        context: (deterministic::Context, Self::Context),
        ancestry: impl Ancestry<Self::Block>,
        input: (),
    ) -> Option<Digested<Self::Block>> {
        let honest = self.0.propose(context, ancestry, input).await?;
        let b = honest.inner();
        let mut root = b.state_root();
        root.0[0] ^= 0xff;
        let block = Block::new(b.parent(), b.height(), b.time_ms(), root, b.txs().to_vec());
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        context: (deterministic::Context, Self::Context),
        ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        self.0.verify(context, ancestry).await
    }
}

#[test]
fn a_proposer_with_a_wrong_state_root_is_outvoted() {
    runner(9).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..4).map(|_| app(&genesis)).collect();
        for (i, a) in apps.iter().enumerate() {
            let child = context.child("validator").with_attribute("index", i);
            if i == 2 {
                start_validator_with(
                    child,
                    &oracle,
                    &keys,
                    i,
                    a.clone(),
                    WrongRoot(a.clone()),
                    None,
                )
                .await;
            } else {
                start_validator(child, &oracle, &keys, i, a.clone()).await;
            }
        }
        wait_for_height(&context, &apps, &[0, 1, 3], 40).await;
        assert_agree(&apps);
        // Every finalized block re-executed to its root on the honest nodes,
        // so none of the corrupted proposals made it in.
        let roots = apps[0].finalized_roots();
        apps[0].with_state(|s| assert_eq!(Some(&s.root()), roots.values().last()));
    });
}
