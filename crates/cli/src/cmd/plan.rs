//! The shape of a local network and its households, as `genesis`, `devnet` and `bench` take it.

/// The shape of a local network.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub(crate) validators: usize,
    /// Slot length in seconds (the devnet accelerates 15-minute slots).
    #[arg(long, default_value_t = 10)]
    pub(crate) slot_seconds: u64,
    /// First port; validator i uses base + 2i (p2p) and base + 2i + 1 (API).
    #[arg(long, default_value_t = 7400)]
    pub(crate) base_port: u16,
    /// An idle chain still makes a block this often (milliseconds).
    #[arg(long, default_value_t = 2_000)]
    pub(crate) idle_block_ms: u64,
    /// How long each validator keeps finalized blocks (milliseconds of block
    /// time behind the tip; 0: every block, an archive node).
    #[arg(long, default_value_t = 86_400_000)]
    pub(crate) block_retention_ms: u64,
    /// How many slots a settlement (every order and trade) stays in the
    /// chain's state (0: forever). 2 880 is 30 days of 15-minute slots.
    #[arg(long, default_value_t = 2_880)]
    pub(crate) history_slots: u64,
    /// A validator snapshots its state every this many blocks (and prunes
    /// blocks in steps of it).
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) snapshot_every_blocks: u64,
    /// How orders are placed: `transparent` (open orders), `shielded`
    /// (privacy mode A: ring-signed orders funded from a shielded pool) or
    /// `enclave` (privacy mode B: sealed orders cleared by an enclave
    /// committee).
    #[arg(long, value_enum, default_value_t = Privacy::Transparent)]
    pub(crate) privacy: Privacy,
    /// Mode A: members of every funds ring (the spent output and its decoys).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=255))]
    pub(crate) ring_size: u16,
    /// Mode B: enclaves in the committee, each its own process (t = n/2 + 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub(crate) enclaves: u16,
    /// The validators' IPv4 addresses, comma-separated (validator i listens
    /// on the i-th; loopback for the rest): one host or namespace each.
    #[arg(long, value_delimiter = ',')]
    pub(crate) hosts: Vec<std::net::Ipv4Addr>,
    /// Validator seats laid out but not started (`validator-N…`, after the
    /// validators): the network knows their addresses, and `quartier gov`
    /// can vote one in; start it with `quartier node --sync-from`.
    #[arg(long, default_value_t = 1)]
    pub(crate) spare_validators: usize,
    /// Blocks per consensus epoch: a validator voted in or out signs, or
    /// stops, from the next epoch boundary on (0: one epoch, the genesis
    /// validators sign for good; a vote moves only the governance votes).
    #[arg(long, default_value_t = 64)]
    pub(crate) epoch_blocks: u64,
}

/// The devnet's privacy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Privacy {
    /// Open orders: price and amount public.
    Transparent,
    /// Privacy mode A: shielded originators (stealth addresses, ring signatures).
    Shielded,
    /// Privacy mode B: sealed orders, simulated-TEE enclave committee.
    Enclave,
}

impl PlanArgs {
    pub(crate) fn plan(&self) -> anyhow::Result<quartier_devnet::layout::DevnetPlan> {
        use anyhow::Context as _;
        let sealed = match self.privacy {
            Privacy::Transparent | Privacy::Shielded => None,
            Privacy::Enclave => {
                // The enclaves run this binary: allow its measurement at genesis.
                let exe = std::env::current_exe().context("locating the quartier binary")?;
                let bytes =
                    std::fs::read(&exe).with_context(|| format!("measuring {}", exe.display()))?;
                Some(quartier_devnet::layout::SealedPlan {
                    enclaves: usize::from(self.enclaves),
                    threshold: self.enclaves / 2 + 1,
                    epoch_slots: 4,
                    measurement: quartier_enclave::attestation::Measurement::of_binary(&bytes),
                })
            }
        };
        Ok(quartier_devnet::layout::DevnetPlan {
            validators: self.validators,
            slot_ms: self.slot_seconds * 1000,
            gate_ms: self.slot_seconds * 200,
            base_port: self.base_port,
            idle_block_ms: self.idle_block_ms,
            block_retention_ms: self.block_retention_ms,
            history_slots: self.history_slots,
            snapshot_every_blocks: self.snapshot_every_blocks,
            sealed,
            hosts: self.hosts.clone(),
            spare_validators: self.spare_validators,
            epoch_blocks: self.epoch_blocks,
            shielded: (self.privacy == Privacy::Shielded).then_some(
                quartier_ledger::ShieldedPolicy {
                    ring_size: self.ring_size,
                },
            ),
        })
    }
}

/// The simulated households of a devnet.
#[derive(clap::Args)]
pub(crate) struct HouseholdArgs {
    /// Households with a meter agent (0: none).
    #[arg(long, default_value_t = 37)]
    pub(crate) households: u32,
    /// How many of them have PV.
    #[arg(long, default_value_t = 27)]
    pub(crate) prosumers: u32,
    /// Seed of the households, their keys and their bids.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Bidding strategy: fixed, random, time-of-day, adaptive or mixed.
    #[arg(long, default_value = "mixed")]
    pub(crate) strategy: quartier_meter::StrategyKind,
    /// Simulated day of the year (1-366) of the first slot, which starts at 06:00.
    #[arg(long, default_value_t = 172, value_parser = clap::value_parser!(u64).range(1..=366))]
    pub(crate) start_day: u64,
}

impl HouseholdArgs {
    pub(crate) fn plan(&self) -> quartier_devnet::fleet::FleetPlan {
        quartier_devnet::fleet::FleetPlan {
            households: self.households,
            prosumers: self.prosumers,
            seed: self.seed,
            strategy: self.strategy,
            start_interval: (self.start_day - 1) * 96 + 6 * 4,
            // 200 CHF each.
            top_up: quartier_types::Money::new(200 * 100_000_000),
        }
    }
}
