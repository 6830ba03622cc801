//! `quartier genesis`: keys, a network genesis and node configs for a local network.

use super::plan::PlanArgs;

pub(crate) fn genesis(out: &std::path::Path, plan: &PlanArgs) -> anyhow::Result<()> {
    let layout = quartier_devnet::layout::lay_out(out, &plan.plan()?)?;
    println!("genesis: {}", layout.genesis_file.display());
    for config in &layout.node_configs {
        println!("node:    {}", config.display());
    }
    Ok(())
}
