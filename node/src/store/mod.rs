//! The node's database (redb, in the data dir): what a role asked to keep, committed durably before
//! the node carries out the role's next action. Round secrets are encrypted at rest with
//! ChaCha20-Poly1305 under the data dir's `store.key` (0600); the database file holds no plaintext
//! secret. redb locks the file, so a second process on the same data dir is refused.

mod otps;
pub mod record;

use crate::keys::{self, KeyFileError};
use libp2p::PeerId;
use otpmesh_protocol::beacon;
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::Record;
use otpmesh_protocol::round::{RoundId, Secret, Transcript};
use record::Sealer;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};

pub const DB_FILE: &str = "node.redb";
/// Rounds kept in the database; older ones are deleted with their counters.
pub const MAX_STORED_ROUNDS: u64 = 32;

/// Memory redb may use to cache pages (its default is 1 GiB).
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
/// Own OTP counters: (round, requester) → next counter. Never compacted (pruned with rounds), so a
/// counter never goes back.
const COUNTERS: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("counters");
/// Failed verifications: requester → CBOR (failure times, locked until).
const ATTEMPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("attempts");
/// Enrolment keys: requester → sealed (epoch, key).
const ENROLMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("enrolments");
/// TOTP tokens: requester → sealed CBOR token.
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("totp_tokens");
/// Key distribution centre users: name → sealed (name, PeerId, key, registration time).
const KDC_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("kdc_users");
/// The beacon chain: round → CBOR entry (transcript and value; public, so not sealed). At most
/// [`beacon::MAX_RUN`] entries: the oldest go first.
const BEACON: TableDefinition<u64, &[u8]> = TableDefinition::new("beacon");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is in use by another otpmesh process (one process per data dir)")]
    Locked { path: PathBuf },
    #[error("database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("stored round {round} is corrupt or was written under another store key")]
    Corrupt { round: u64 },
    #[error("a record in table {table} is corrupt")]
    CorruptRecord { table: &'static str },
}

pub struct Store {
    db: Database,
    path: PathBuf,
    sealer: Sealer,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        keys::ensure_data_dir(dir)?;
        let key = keys::load_or_create_store_key(dir)?;
        let path = dir.join(DB_FILE);
        let db = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked { path })
            }
            Err(e) => {
                return Err(StoreError::Db {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let store = Store {
            db,
            path,
            sealer: Sealer::new(&key),
        };
        // Create the tables so reads of a fresh database find them.
        store.write(|txn| {
            txn.open_table(META)?;
            txn.open_table(ROUNDS)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(otps::OTPS)?;
            otps::migrate(txn, &store.sealer)?;
            txn.open_table(ATTEMPTS)?;
            txn.open_table(ENROLMENTS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(KDC_USERS)?;
            txn.open_table(BEACON)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        f(&txn).map_err(|e| self.db_err(e))?;
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Commits one record durably.
    pub fn commit(&self, record: &Record) -> Result<(), StoreError> {
        self.commit_all(&[record])
    }

    /// Commits `records` durably in one transaction: all of them or none (group commit, one sync).
    pub fn commit_all(&self, records: &[&Record]) -> Result<(), StoreError> {
        self.write(|txn| records.iter().try_for_each(|r| self.apply(txn, r)))
    }

    fn apply(&self, txn: &redb::WriteTransaction, record: &Record) -> Result<(), redb::Error> {
        match record {
            Record::Opened(round) => {
                txn.open_table(META)?.insert("last_opened", round.0)?;
                Ok(())
            }
            Record::Beacon(entry) => {
                let mut bytes = Vec::new();
                ciborium::into_writer(entry.as_ref(), &mut bytes)
                    .expect("writing CBOR into a Vec cannot fail");
                let mut table = txn.open_table(BEACON)?;
                table.insert(entry.round(), bytes.as_slice())?;
                while table.len()? > beacon::MAX_RUN as u64 {
                    table.pop_first()?;
                }
                Ok(())
            }
            Record::Round { transcript, secret } => {
                let round = transcript.round.0;
                let sealed = self.sealer.seal_round(transcript, secret);
                {
                    let mut rounds = txn.open_table(ROUNDS)?;
                    rounds.insert(round, sealed.as_slice())?;
                    let cutoff = round.saturating_sub(MAX_STORED_ROUNDS);
                    rounds.retain(|r, _| r > cutoff)?;
                    txn.open_table(COUNTERS)?.retain(|(r, _), _| r > cutoff)?;
                    Ok(())
                }
            }
            Record::Issued { otp, expires_at_ms } => {
                let who = otp.requester.to_bytes();
                let mut counters = txn.open_table(COUNTERS)?;
                let next = counters
                    .get((otp.round.0, who.as_slice()))?
                    .map_or(0, |v| v.value());
                if otp.counter >= next {
                    counters.insert((otp.round.0, who.as_slice()), otp.counter + 1)?;
                }
                otps::put(txn, &self.sealer, otp, *expires_at_ms, false)
            }
            Record::Used { otp, expires_at_ms } => {
                otps::put(txn, &self.sealer, otp, *expires_at_ms, true)
            }
            Record::Attempts {
                requester,
                failures,
                locked_until,
            } => {
                let who = requester.to_bytes();
                let value = record::encode_attempts(failures, *locked_until);
                {
                    let mut table = txn.open_table(ATTEMPTS)?;
                    if failures.is_empty() && *locked_until == 0 {
                        table.remove(who.as_slice())?;
                    } else {
                        table.insert(who.as_slice(), value.as_slice())?;
                    }
                    Ok(())
                }
            }
            Record::Enrolment { peer, epoch, key } => {
                let who = peer.to_bytes();
                let sealed = self.sealer.seal_enrolment(&who, *epoch, key);
                {
                    txn.open_table(ENROLMENTS)?
                        .insert(who.as_slice(), sealed.as_slice())?;
                    Ok(())
                }
            }
            Record::TotpToken { requester, token } => {
                let who = requester.to_bytes();
                let sealed = self.sealer.seal_token(&who, token);
                {
                    txn.open_table(TOKENS)?
                        .insert(who.as_slice(), sealed.as_slice())?;
                    Ok(())
                }
            }
            Record::KdcUser(user) => {
                let sealed = self.sealer.seal_kdc_user(user);
                txn.open_table(KDC_USERS)?
                    .insert(user.name.as_str(), sealed.as_slice())?;
                Ok(())
            }
            Record::ExpireOtps { before_ms } => otps::compact(txn, *before_ms),
            Record::Compact {
                expired_before_ms,
                failures_before_ms,
                now_ms,
            } => {
                otps::compact(txn, *expired_before_ms)?;
                // An attempts record that no longer counts (old failures, lockout over) goes too;
                // one that does not decode is kept for `distributor_state` to report.
                txn.open_table(ATTEMPTS)?
                    .retain(|_, bytes| match record::attempts(bytes) {
                        Some((failures, locked_until)) => {
                            locked_until > *now_ms
                                || failures.iter().any(|t| *t >= *failures_before_ms)
                        }
                        None => true,
                    })?;
                Ok(())
            }
        }
    }

    /// What a distributor restarts from.
    pub fn distributor_state(&self) -> Result<Restored, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let mut restored = Restored {
            rounds: self.rounds()?,
            ..Default::default()
        };
        let otps = txn.open_table(otps::OTPS).map_err(|e| self.db_err(e))?;
        let refused = |round| {
            tracing::warn!(
                table = "otps",
                round,
                reason = "the row's MAC does not match (changed outside otpmesh)",
                "stored OTP row refused: held as used"
            )
        };
        restored.otps = otps::read(&otps, &self.sealer, refused)
            .map_err(|e| self.db_err(e))?
            .map_err(|table| StoreError::CorruptRecord { table })?;
        let attempts = txn.open_table(ATTEMPTS).map_err(|e| self.db_err(e))?;
        for entry in attempts.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let corrupt = || StoreError::CorruptRecord { table: "attempts" };
            let requester = record::peer(k.value()).ok_or_else(corrupt)?;
            let (failures, locked_until) = record::attempts(v.value()).ok_or_else(corrupt)?;
            restored.attempts.push((requester, failures, locked_until));
        }
        let enrolments = txn.open_table(ENROLMENTS).map_err(|e| self.db_err(e))?;
        for entry in enrolments.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let corrupt = || StoreError::CorruptRecord {
                table: "enrolments",
            };
            let requester = record::peer(k.value()).ok_or_else(corrupt)?;
            let (epoch, key) = self
                .sealer
                .open_enrolment(k.value(), v.value())
                .ok_or_else(corrupt)?;
            restored.enrolments.push((requester, epoch, key));
        }
        let tokens = txn.open_table(TOKENS).map_err(|e| self.db_err(e))?;
        for entry in tokens.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let corrupt = || StoreError::CorruptRecord {
                table: "totp_tokens",
            };
            let requester = record::peer(k.value()).ok_or_else(corrupt)?;
            let token = self
                .sealer
                .open_token(k.value(), v.value())
                .ok_or_else(corrupt)?;
            restored.tokens.push((requester, token));
        }
        let users = txn.open_table(KDC_USERS).map_err(|e| self.db_err(e))?;
        for entry in users.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let user = self
                .sealer
                .open_kdc_user(k.value(), v.value())
                .ok_or(StoreError::CorruptRecord { table: "kdc_users" })?;
            restored.kdc_users.push(user);
        }
        restored.counters = self.counters()?;
        Ok(restored)
    }

    pub fn last_opened(&self) -> Result<Option<RoundId>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        Ok(meta
            .get("last_opened")
            .map_err(|e| self.db_err(e))?
            .map(|v| RoundId(v.value())))
    }

    /// Stored rounds, oldest first.
    pub fn rounds(&self) -> Result<Vec<(Transcript, Secret)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(ROUNDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let round = k.value();
            let opened = self.sealer.open_round(round, v.value());
            out.push(opened.ok_or(StoreError::Corrupt { round })?);
        }
        Ok(out)
    }

    /// The beacon chain kept, oldest first.
    pub fn beacon(&self) -> Result<Vec<beacon::Entry>, StoreError> {
        let mut out = Vec::new();
        self.beacon_before(None, |e| {
            out.push(e);
            true
        })?;
        out.reverse();
        Ok(out)
    }

    /// The beacon entries of rounds before `before` (all: `None`), newest first, to `take` while
    /// it answers true.
    pub fn beacon_before(
        &self,
        before: Option<u64>,
        mut take: impl FnMut(beacon::Entry) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(BEACON).map_err(|e| self.db_err(e))?;
        let range = table
            .range(..before.unwrap_or(u64::MAX))
            .map_err(|e| self.db_err(e))?;
        for entry in range.rev() {
            let (_, v) = entry.map_err(|e| self.db_err(e))?;
            let entry: beacon::Entry = ciborium::from_reader(v.value())
                .map_err(|_| StoreError::CorruptRecord { table: "beacon" })?;
            if !take(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Stored OTP counters: (round, requester, next counter).
    pub fn counters(&self) -> Result<Vec<(RoundId, PeerId, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(COUNTERS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let (round, who) = k.value();
            if let Some(peer) = record::peer(who) {
                out.push((RoundId(round), peer, v.value()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpmesh_protocol::digest::Digest32;
    use otpmesh_protocol::phrase::ClientId;
    use otpmesh_protocol::role::OtpRef;
    use otpmesh_protocol::round::Inclusion;
    use redb::TableHandle;

    fn round(n: u64) -> (Transcript, Secret) {
        let secret = Secret::from_bytes([n as u8; 32]);
        let t = Transcript {
            round: RoundId(n),
            generator: PeerId::random(),
            key_fingerprint: Digest32::ZERO,
            included: vec![Inclusion {
                client: ClientId(1),
                ciphertext_hash: Digest32::ZERO,
            }],
            prev_commitment: Digest32::ZERO,
            commitment: secret.commitment(RoundId(n)),
            sealed_at_ms: 0,
            threshold: None,
        };
        (t, secret)
    }

    #[test]
    fn records_survive_reopen_and_secrets_are_not_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let who = PeerId::random();
        {
            let store = Store::open(dir.path()).unwrap();
            let (t, s) = round(3);
            store.commit(&Record::Opened(RoundId(4))).unwrap();
            store
                .commit(&Record::Round {
                    transcript: t,
                    secret: s,
                })
                .unwrap();
            let me = PeerId::random();
            let otp = |counter| OtpRef {
                issuer: me,
                requester: who,
                round: RoundId(3),
                counter,
            };
            store
                .commit(&Record::Issued {
                    otp: otp(6),
                    expires_at_ms: 100,
                })
                .unwrap();
            store
                .commit(&Record::Issued {
                    otp: otp(2),
                    expires_at_ms: 50,
                })
                .unwrap();
            store
                .commit(&Record::Used {
                    otp: otp(6),
                    expires_at_ms: 100,
                })
                .unwrap();
            let attempts = Record::Attempts {
                requester: who,
                failures: vec![7, 8],
                locked_until: 99,
            };
            store.commit(&attempts).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_opened().unwrap(), Some(RoundId(4)));
        let state = store.distributor_state().unwrap();
        assert_eq!(state.rounds.len(), 1);
        assert_eq!(state.rounds[0].1, Secret::from_bytes([3; 32]));
        assert_eq!(
            state.counters,
            vec![(RoundId(3), who, 7)],
            "the counter never goes back"
        );
        let mut otps: Vec<(u64, u64, bool)> = state
            .otps
            .iter()
            .map(|(o, e, u)| (o.counter, *e, *u))
            .collect();
        otps.sort();
        assert_eq!(otps, vec![(2, 50, false), (6, 100, true)]);
        assert_eq!(state.attempts, vec![(who, vec![7, 8], 99)]);
        store
            .commit(&Record::Compact {
                expired_before_ms: 60,
                failures_before_ms: 0,
                now_ms: 0,
            })
            .unwrap();
        assert_eq!(
            store.distributor_state().unwrap().attempts.len(),
            1,
            "recent failures are kept"
        );
        store
            .commit(&Record::Compact {
                expired_before_ms: 60,
                failures_before_ms: 9,
                now_ms: 100,
            })
            .unwrap();
        assert!(
            store.distributor_state().unwrap().attempts.is_empty(),
            "old failures and an ended lock go"
        );
        let state = store.distributor_state().unwrap();
        assert_eq!(state.otps.len(), 1, "the expired record is compacted");
        assert_eq!(
            state.counters,
            vec![(RoundId(3), who, 7)],
            "compaction keeps counters"
        );
        drop(store);
        let raw = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        assert!(
            !raw.windows(32).any(|w| w == [3u8; 32]),
            "plaintext secret found in the database file"
        );
    }

    #[test]
    fn totp_tokens_and_enrolments_survive_reopen_encrypted() {
        use otpmesh_protocol::totp;
        let dir = tempfile::tempdir().unwrap();
        let who = PeerId::random();
        let token = totp::Token {
            secret: totp::Secret(zeroize::Zeroizing::new(vec![0xA5; 20])),
            params: totp::Params::default(),
            last_step: Some(9),
            drift: -1,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(&Record::TotpToken {
                    requester: who,
                    token: token.clone(),
                })
                .unwrap();
            let key = Secret::from_bytes([0x5A; 32]);
            store
                .commit(&Record::Enrolment {
                    peer: who,
                    epoch: 3,
                    key,
                })
                .unwrap();
        }
        let state = Store::open(dir.path())
            .unwrap()
            .distributor_state()
            .unwrap();
        assert_eq!(state.tokens, vec![(who, token)]);
        assert_eq!(
            state.enrolments,
            vec![(who, 3, Secret::from_bytes([0x5A; 32]))]
        );
        let raw = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        assert!(
            !raw.windows(20).any(|w| w == [0xA5; 20]),
            "plaintext TOTP secret in the file"
        );
        assert!(
            !raw.windows(32).any(|w| w == [0x5A; 32]),
            "plaintext enrolment key in the file"
        );
    }

    #[test]
    fn centre_users_survive_reopen_sealed_and_a_second_registration_replaces_the_first() {
        use otpmesh_protocol::kdc::{Key, Name};
        use otpmesh_protocol::role::distributor::kdc::User;
        let dir = tempfile::tempdir().unwrap();
        let user = |peer, key: u8, at| User {
            name: Name::new("alice").unwrap(),
            peer,
            key: Key::from_bytes([key; 32]),
            registered_at_ms: at,
        };
        let second = user(PeerId::random(), 0x6B, 2);
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(&Record::KdcUser(user(PeerId::random(), 0x6A, 1)))
                .unwrap();
            store.commit(&Record::KdcUser(second.clone())).unwrap();
        }
        let state = Store::open(dir.path())
            .unwrap()
            .distributor_state()
            .unwrap();
        assert_eq!(state.kdc_users, vec![second]);
        let raw = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        for k in [0x6A, 0x6B] {
            assert!(
                !raw.windows(32).any(|w| w == [k; 32]),
                "plaintext user key in the file"
            );
        }
    }

    #[test]
    fn a_foreign_file_is_a_clear_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            b"this is not a database, and must not be replaced",
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(DB_FILE), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(DB_FILE)).unwrap(),
            b"this is not a database, and must not be replaced"
        );
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn old_rounds_and_their_counters_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let who = PeerId::random();
        for n in 1..=(MAX_STORED_ROUNDS + 5) {
            let (t, s) = round(n);
            let otp = OtpRef {
                issuer: who,
                requester: who,
                round: RoundId(n),
                counter: 0,
            };
            store
                .commit(&Record::Issued {
                    otp,
                    expires_at_ms: 1,
                })
                .unwrap();
            store
                .commit(&Record::Round {
                    transcript: t,
                    secret: s,
                })
                .unwrap();
        }
        assert_eq!(store.rounds().unwrap().len() as u64, MAX_STORED_ROUNDS);
        assert_eq!(store.counters().unwrap().len() as u64, MAX_STORED_ROUNDS);
        assert_eq!(store.rounds().unwrap()[0].0.round, RoundId(6));
    }

    /// (counter, used) of every OTP row a distributor restarts from, sorted.
    fn otp_rows(store: &Store) -> Vec<(u64, bool)> {
        let mut rows: Vec<(u64, bool)> = store
            .distributor_state()
            .unwrap()
            .otps
            .iter()
            .map(|(o, _, used)| (o.counter, *used))
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn a_used_row_flipped_back_or_forged_outside_otpmesh_is_held_as_used() {
        let dir = tempfile::tempdir().unwrap();
        let (me, who) = (PeerId::random(), PeerId::random());
        let otp = |counter| OtpRef {
            issuer: me,
            requester: who,
            round: RoundId(3),
            counter,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(&Record::Used {
                    otp: otp(1),
                    expires_at_ms: u64::MAX,
                })
                .unwrap();
            store
                .commit(&Record::Issued {
                    otp: otp(2),
                    expires_at_ms: u64::MAX,
                })
                .unwrap();
            // Whoever can write node.redb: flips otp 1 back to unused (its MAC as it was), and
            // forges otp 3 as issued-but-unused with a made-up MAC.
            let (issuer, requester) = (me.to_bytes(), who.to_bytes());
            let txn = store.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(otps::OTPS).unwrap();
                let key = |c| (u64::MAX, issuer.as_slice(), requester.as_slice(), 3u64, c);
                let (_, mac) = table.get(key(1)).unwrap().unwrap().value();
                table.insert(key(1), (false, mac)).unwrap();
                table.insert(key(3), (false, [7u8; 16])).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let rows = otp_rows(&store);
        assert_eq!(
            rows,
            vec![(1, true), (2, false), (3, true)],
            "the flipped and the forged row are refused (held as used); the honest one stands"
        );
    }

    #[test]
    fn rows_of_the_mac_less_otp_table_are_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (me, who) = (PeerId::random(), PeerId::random());
        {
            // A data dir of an earlier version: the `otps` table without MACs.
            let store = Store::open(dir.path()).unwrap();
            let (issuer, requester) = (me.to_bytes(), who.to_bytes());
            let txn = store.db.begin_write().unwrap();
            {
                let mut old = txn.open_table(otps::OTPS_V1).unwrap();
                let key = |c| (issuer.as_slice(), requester.as_slice(), 2u64, c);
                old.insert(key(1), (u64::MAX, true)).unwrap();
                old.insert(key(2), (u64::MAX, false)).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let rows = otp_rows(&store);
        assert_eq!(rows, vec![(1, true), (2, false)], "both kept as they were");
        let txn = store.db.begin_read().unwrap();
        assert!(
            txn.open_table(otps::OTPS_V1).is_err(),
            "the old table is gone"
        );
    }

    #[test]
    fn rows_of_the_issuer_ordered_otp_table_move_to_the_expiry_ordered_one_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (me, who) = (PeerId::random(), PeerId::random());
        let (issuer, requester) = (me.to_bytes(), who.to_bytes());
        {
            // A data dir of the previous version: `otps_v2`, keyed by issuer, each row MACed;
            // row 3's used mark was flipped back outside otpmesh (its MAC no longer matches).
            let store = Store::open(dir.path()).unwrap();
            let v2 = otps::OTPS_V2;
            let txn = store.db.begin_write().unwrap();
            {
                let mut old = txn.open_table(v2).unwrap();
                for (counter, expires, used, honest) in [
                    (1, 500, true, true),
                    (2, 400, false, true),
                    (3, 300, false, false),
                ] {
                    let key = (issuer.as_slice(), requester.as_slice(), 2u64, counter);
                    let mac = store.sealer.otp_row_mac(key, expires, used ^ !honest);
                    old.insert(key, (expires, used, mac)).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut rows: Vec<(u64, u64, bool)> = store
            .distributor_state()
            .unwrap()
            .otps
            .iter()
            .map(|(o, e, u)| (o.counter, *e, *u))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![(1, 500, true), (2, 400, false), (3, 300, true)],
            "kept as they were; the tampered row held as used"
        );
        let txn = store.db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n == "otps_v2"),
            "the old table is gone: {names:?}"
        );
    }

    #[test]
    fn compaction_deletes_the_expired_rows_and_only_those() {
        // The minute's compaction, and the second's step that forgets expired OTPs alone.
        let steps = [
            Record::Compact {
                expired_before_ms: 1_250,
                failures_before_ms: 10,
                now_ms: 10,
            },
            Record::ExpireOtps { before_ms: 1_250 },
        ];
        for (step, attempts_left) in steps.into_iter().zip([0, 1]) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let (me, other, who) = (PeerId::random(), PeerId::random(), PeerId::random());
            let otp = |issuer, counter| OtpRef {
                issuer,
                requester: who,
                round: RoundId(1),
                counter,
            };
            for c in 0..50u64 {
                let expires_at_ms = 1_000 + c * 10;
                store
                    .commit(&Record::Issued {
                        otp: otp(me, c),
                        expires_at_ms,
                    })
                    .unwrap();
                if c % 2 == 0 {
                    // Its use here, and another issuer's replicated marker.
                    for issuer in [me, other] {
                        let used = Record::Used {
                            otp: otp(issuer, c),
                            expires_at_ms,
                        };
                        store.commit(&used).unwrap();
                    }
                }
            }
            let old_failure = Record::Attempts {
                requester: who,
                failures: vec![5],
                locked_until: 0,
            };
            store.commit(&old_failure).unwrap();
            store.commit(&step).unwrap();
            let state = store.distributor_state().unwrap();
            let mut left: Vec<(bool, u64, bool)> = state
                .otps
                .iter()
                .map(|(o, _, used)| (o.issuer == me, o.counter, *used))
                .collect();
            left.sort();
            let mut expected: Vec<(bool, u64, bool)> = (25..50)
                .flat_map(|c| {
                    let mine = (true, c, c % 2 == 0);
                    let theirs = (c % 2 == 0).then_some((false, c, true));
                    std::iter::once(mine).chain(theirs)
                })
                .collect();
            expected.sort();
            assert_eq!(
                left, expected,
                "{step:?}: rows expiring at 1250 or later stay, used marks with them"
            );
            assert_eq!(
                state.attempts.len(),
                attempts_left,
                "{step:?}: old attempts go with the compaction only"
            );
        }
    }

    #[test]
    fn a_wrong_store_key_reads_as_corrupt_not_as_garbage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let (t, s) = round(1);
            store
                .commit(&Record::Round {
                    transcript: t,
                    secret: s,
                })
                .unwrap();
        }
        keys::write_file(&dir.path().join(keys::STORE_KEY_FILE), &[9u8; 32], 0o600).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            store.rounds(),
            Err(StoreError::Corrupt { round: 1 })
        ));
    }
}
