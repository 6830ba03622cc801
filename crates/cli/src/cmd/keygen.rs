//! `quartier keygen`: a new Ed25519 key file.

pub(crate) fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let seed = quartier_devnet::layout::random_seed()?;
    quartier_node::config::write_key(out, &seed)?;
    println!("{}", quartier_devnet::layout::account_of(&seed));
    Ok(())
}
