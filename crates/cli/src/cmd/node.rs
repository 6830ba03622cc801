//! `quartier node`: run one validator.

use super::init_logging;

pub(crate) fn node(config: &std::path::Path, sync_from: Option<&str>) -> anyhow::Result<()> {
    init_logging();
    let config = quartier_node::config::NodeConfig::load(config)?;
    quartier_node::run::run(config, sync_from)
}
