//! The registry: meters, their regions and tariffs, written by the DSO.

use crate::accounts::rolled;
use crate::context::{BlockContext, Event};
use crate::error::require;
use crate::state::{Meter, StateKey};
use crate::tx::{Authority, MeterRole};
use crate::{Role, State, TxError};
use quartier_types::{AccountId, Price, RegionId, RegionParams};

pub(crate) fn register_meter(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    meter: AccountId,
    (region, role, pv_watts): (RegionId, MeterRole, u32),
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    if state.region(region).is_none() {
        return Err(TxError::UnknownRegion(region));
    }
    if !quartier_shielded::keys::is_prime_order_point(&meter.0) {
        return Err(TxError::InvalidMeterKey);
    }
    // A role's key is not a meter: its flows are written apart.
    if state.meter(&meter).is_some() || state.holds_role(&meter) {
        return Err(TxError::AlreadyRegistered);
    }
    if (role == MeterRole::Prosumer) != (pv_watts > 0) {
        return Err(TxError::CapacityMismatch);
    }
    // A capacity a vote approved for this meter is taken as it is (once);
    // otherwise it must be within the bound per meter and, with the
    // period's other registrations, within the cap per period.
    let mut issuance = rolled(state, ctx);
    if issuance.pv_approved.get(&meter) == Some(&pv_watts) {
        issuance.pv_approved.remove(&meter);
    } else {
        if let Some(bound) = issuance.limits.max_pv_watts
            && pv_watts > bound
        {
            return Err(TxError::PvAboveBound { bound });
        }
        let registered = issuance
            .pv_registered
            .checked_add(u64::from(pv_watts))
            .ok_or(TxError::Overflow)?;
        if let Some(cap) = issuance.limits.new_pv_watts_per_period
            && registered > cap
        {
            return Err(TxError::NewPvCap { cap });
        }
        issuance.pv_registered = registered;
    }
    state.records.issuance = issuance;
    state.touch(StateKey::Issuance);
    state.records.meters.insert(
        meter,
        Meter {
            region,
            role,
            pv_watts,
            retired: false,
        },
    );
    state.touch(StateKey::Meter(meter));
    Ok(Vec::new())
}

pub(crate) fn retire_meter(
    state: &mut State,
    signer: AccountId,
    meter: AccountId,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    let record = state
        .records
        .meters
        .get_mut(&meter)
        .ok_or(TxError::UnknownMeter)?;
    if record.retired {
        return Err(TxError::MeterRetired);
    }
    record.retired = true;
    state.touch(StateKey::Meter(meter));
    Ok(Vec::new())
}

pub(crate) fn set_local_fee(
    state: &mut State,
    signer: AccountId,
    region: RegionId,
    fee: Price,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    update_region(state, region, |p| {
        RegionParams::new(p.grid_tariff(), p.feed_in_tariff(), fee)
    })
}

pub(crate) fn set_tariffs(
    state: &mut State,
    signer: AccountId,
    region: RegionId,
    grid: Price,
    feed_in: Price,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Utility), Role::Utility)?;
    if let Some(bound) = state.issuance().limits.max_grid_tariff
        && grid > bound
    {
        return Err(TxError::TariffAboveBound { bound });
    }
    update_region(state, region, |p| {
        RegionParams::new(grid, feed_in, p.local_fee())
    })
}

/// Replaces a region's parameters with `change` of the current ones; books
/// already open keep theirs.
fn update_region(
    state: &mut State,
    region: RegionId,
    change: impl FnOnce(&RegionParams) -> Result<RegionParams, quartier_types::ParamsError>,
) -> Result<Vec<Event>, TxError> {
    let current = state.region(region).ok_or(TxError::UnknownRegion(region))?;
    let params = change(current).map_err(TxError::InvalidTariffs)?;
    state.records.regions.insert(region, params);
    state.touch(StateKey::Region(region));
    Ok(Vec::new())
}

/// The signer's active meter registration.
pub(crate) fn active_meter(state: &State, signer: &AccountId) -> Result<Meter, TxError> {
    let meter = *state
        .meter(signer)
        .ok_or(TxError::NotAuthorised { role: Role::Meter })?;
    if meter.retired {
        return Err(TxError::MeterRetired);
    }
    Ok(meter)
}
