//! The OTP table: one row per OTP issued here or marked used (a replicated marker), in expiry
//! order, so what a commit writes is near the table's end and what compaction deletes is its
//! start.
//!
//! ```text
//! key   (expires at, issuer, requester, round, counter)
//! value MAC of (issuer, requester, round, counter, expires at, used) under the row subkey
//!       used is the table's value too: Issued writes `false`, Used rewrites the row `true`
//! Compact(before) ─► delete the range ..(before, …): the expired rows, and only those
//! ```
//!
//! Keyed by issuer and requester first (the earlier layout), 64 requesters dirtied about 64
//! leaves per commit and compaction scanned the whole table in one transaction; the soak saw
//! those as stalls (issue 23). A used mark stays in the OTP's own row rather than in a table of
//! its own: a separate mark could be deleted by whoever can write the file, which would make the
//! OTP unused again, where deleting the row makes it unknown (refused).

use super::record::{self, Sealer, ROW_MAC_BYTES};
use otpmesh_protocol::role::OtpRef;
use otpmesh_protocol::round::RoundId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use std::collections::hash_map::{Entry, HashMap};

/// (expires at, issuer, requester, round, counter) → (used, MAC).
pub(super) const OTPS: TableDefinition<Key, (bool, [u8; ROW_MAC_BYTES])> =
    TableDefinition::new("otps_v3");
type Key = (u64, &'static [u8], &'static [u8], u64, u64);
/// The layout before this one, keyed by issuer first: migrated on open, then removed.
pub(super) const OTPS_V2: TableDefinition<V1Key, (u64, bool, [u8; ROW_MAC_BYTES])> =
    TableDefinition::new("otps_v2");
/// The table before rows carried a MAC: migrated on open, then removed.
pub(super) const OTPS_V1: TableDefinition<V1Key, (u64, bool)> = TableDefinition::new("otps");
/// (issuer, requester, round, counter).
type V1Key = (&'static [u8], &'static [u8], u64, u64);

/// A row of an earlier layout, read for migration: issuer, requester, round, counter, expiry,
/// used.
type OldRow = (Vec<u8>, Vec<u8>, u64, u64, u64, bool);

/// An OTP row as read back: which OTP, when it expires, whether it was used.
pub(super) type Row = (OtpRef, u64, bool);

/// Writes the row of `otp`: issued (`used` false) or used.
pub(super) fn put(
    txn: &WriteTransaction,
    sealer: &Sealer,
    otp: &OtpRef,
    expires_at: u64,
    used: bool,
) -> Result<(), redb::Error> {
    let (issuer, who) = (otp.issuer.to_bytes(), otp.requester.to_bytes());
    let id = (issuer.as_slice(), who.as_slice(), otp.round.0, otp.counter);
    let mac = sealer.otp_row_mac(id, expires_at, used);
    let key = (expires_at, id.0, id.1, id.2, id.3);
    txn.open_table(OTPS)?.insert(key, (used, mac))?;
    Ok(())
}

/// Deletes the rows of OTPs that expired before `before`: a range at the table's start.
pub(super) fn compact(txn: &WriteTransaction, before: u64) -> Result<(), redb::Error> {
    let empty: &[u8] = &[];
    let end = (before, empty, empty, 0u64, 0u64);
    txn.open_table(OTPS)?.retain_in(..end, |_, _| false)?;
    Ok(())
}

/// Every row, for a distributor's restart. A row whose MAC does not match was changed outside
/// otpmesh: it is held as used (fail closed) and `refused` is told of it.
pub(super) fn read(
    table: &impl ReadableTable<Key, (bool, [u8; ROW_MAC_BYTES])>,
    sealer: &Sealer,
    mut refused: impl FnMut(u64),
) -> Result<Result<Vec<Row>, &'static str>, redb::StorageError> {
    let mut rows = Vec::new();
    let mut seen: HashMap<OtpRef, usize> = HashMap::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let (expires_at, issuer, requester, round, counter) = k.value();
        let (used, mac) = v.value();
        let honest = sealer.otp_row_ok((issuer, requester, round, counter), expires_at, used, &mac);
        if !honest {
            refused(round);
        }
        let (Some(issuer), Some(requester)) = (record::peer(issuer), record::peer(requester))
        else {
            return Ok(Err("otps"));
        };
        let otp = OtpRef {
            issuer,
            requester,
            round: RoundId(round),
            counter,
        };
        let used = used || !honest;
        // Two rows of one OTP (a marker that named another expiry): used wins, and the later
        // expiry, so it is kept the longer.
        match seen.entry(otp) {
            Entry::Occupied(at) => {
                let row: &mut Row = &mut rows[*at.get()];
                row.1 = row.1.max(expires_at);
                row.2 |= used;
            }
            Entry::Vacant(slot) => {
                slot.insert(rows.len());
                rows.push((otp, expires_at, used));
            }
        }
    }
    Ok(Ok(rows))
}

/// An old table's row, held past its table: the key's parts, the expiry, whether it is used.
fn owned(key: (&[u8], &[u8], u64, u64), expires: u64, used: bool) -> OldRow {
    let (issuer, requester, round, counter) = key;
    (
        issuer.to_vec(),
        requester.to_vec(),
        round,
        counter,
        expires,
        used,
    )
}

/// Rows of the earlier layouts move to this one (v2's keep their used mark, or become used if
/// their MAC does not match; v1's had no MAC); the old tables go.
pub(super) fn migrate(txn: &WriteTransaction, sealer: &Sealer) -> Result<(), redb::Error> {
    let mut moved: Vec<OldRow> = Vec::new();
    let (mut had_v2, mut had_v1) = (false, false);
    if let Ok(v2) = txn.open_table(OTPS_V2) {
        had_v2 = true;
        for entry in v2.iter()? {
            let (k, v) = entry?;
            let (expires, used, mac) = v.value();
            let honest = sealer.otp_row_ok(k.value(), expires, used, &mac);
            moved.push(owned(k.value(), expires, used || !honest));
        }
    }
    if let Ok(v1) = txn.open_table(OTPS_V1) {
        had_v1 = true;
        for entry in v1.iter()? {
            let (k, v) = entry?;
            let (expires, used) = v.value();
            moved.push(owned(k.value(), expires, used));
        }
    }
    {
        let mut table = txn.open_table(OTPS)?;
        for (issuer, requester, round, counter, expires, used) in &moved {
            let id = (issuer.as_slice(), requester.as_slice(), *round, *counter);
            let key = (*expires, id.0, id.1, id.2, id.3);
            // A row in both old tables: used wins.
            let used = *used || table.get(key)?.is_some_and(|v| v.value().0);
            table.insert(key, (used, sealer.otp_row_mac(id, *expires, used)))?;
        }
    }
    if had_v2 {
        txn.delete_table(OTPS_V2)?;
    }
    if had_v1 {
        txn.delete_table(OTPS_V1)?;
    }
    Ok(())
}
