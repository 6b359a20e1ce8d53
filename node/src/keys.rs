//! Key files in a node's data dir: the Ed25519 identity (stable PeerId), the generator's RSA key and
//! the storage key. All secret files are written 0600 and refused when group- or world-readable.

use libp2p::identity::Keypair;
use otpmesh_protocol::seal::{KeyError, PrivateKey};
use rand_core::{OsRng, RngCore};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const IDENTITY_FILE: &str = "identity.key";
pub const RSA_KEY_FILE: &str = "generator.key.pem";
pub const RSA_PUBLIC_FILE: &str = "generator.pub.pem";
pub const STORE_KEY_FILE: &str = "store.key";
/// Largest key file read (a PEM RSA-4096 key is about 3.3 KiB).
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is {len} bytes, larger than any key file ({MAX_KEY_FILE_BYTES} max)")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{path}: not a valid key file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Rsa { path: PathBuf, source: KeyError },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the data dir if it does not exist, and every missing parent, each 0700.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyFileError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Reads a secret file, refusing loose permissions and oversize files.
pub fn read_secret(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    Ok(Some(Zeroizing::new(fs::read(path).map_err(io_err(path))?)))
}

/// Writes a file atomically (temp file, fsync, rename) with `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// The node's identity, created on first use.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, KeyFileError> {
    ensure_data_dir(dir)?;
    let path = dir.join(IDENTITY_FILE);
    if let Some(bytes) = read_secret(&path)? {
        return Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyFileError::Invalid {
            path,
            reason: e.to_string(),
        });
    }
    let keypair = Keypair::generate_ed25519();
    store_identity(dir, &keypair)?;
    Ok(keypair)
}

/// Writes `keypair` as the node's identity (0600), replacing any there.
pub fn store_identity(dir: &Path, keypair: &Keypair) -> Result<(), KeyFileError> {
    ensure_data_dir(dir)?;
    let path = dir.join(IDENTITY_FILE);
    let encoded = keypair
        .to_protobuf_encoding()
        .map_err(|e| KeyFileError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    write_file(&path, &Zeroizing::new(encoded), 0o600)
}

/// The generator's RSA key, created with `bits` on first use; the public half is written beside it.
pub fn load_or_create_rsa(dir: &Path, bits: usize) -> Result<PrivateKey, KeyFileError> {
    ensure_data_dir(dir)?;
    let path = dir.join(RSA_KEY_FILE);
    let rsa_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyFileError::Rsa { path, source }
    };
    let key = match read_secret(&path)? {
        Some(bytes) => {
            let pem = std::str::from_utf8(&bytes).map_err(|_| KeyFileError::Invalid {
                path: path.clone(),
                reason: "not UTF-8 PEM".into(),
            })?;
            PrivateKey::from_pkcs8_pem(pem).map_err(rsa_err(&path))?
        }
        None => {
            let key = PrivateKey::generate(bits, &mut OsRng).map_err(rsa_err(&path))?;
            store_rsa(dir, &key)?;
            return Ok(key);
        }
    };
    let public = dir.join(RSA_PUBLIC_FILE);
    let pem = key.public().to_pem().map_err(rsa_err(&public))?;
    write_file(&public, pem.as_bytes(), 0o644)?;
    Ok(key)
}

/// Writes the generator's RSA key (0600) and its public half (0644), replacing any there.
pub fn store_rsa(dir: &Path, key: &PrivateKey) -> Result<(), KeyFileError> {
    ensure_data_dir(dir)?;
    let (path, public) = (dir.join(RSA_KEY_FILE), dir.join(RSA_PUBLIC_FILE));
    let pem = key.to_pkcs8_pem().map_err(|source| KeyFileError::Rsa {
        path: path.clone(),
        source,
    })?;
    write_file(&path, pem.as_bytes(), 0o600)?;
    let public_pem = key.public().to_pem().map_err(|source| KeyFileError::Rsa {
        path: public.clone(),
        source,
    })?;
    write_file(&public, public_pem.as_bytes(), 0o644)
}

/// Where a requester keeps its enrolment key with `distributor`.
pub fn enrolment_path(dir: &Path, distributor: &libp2p::PeerId) -> PathBuf {
    dir.join("enrolments").join(format!("{distributor}.key"))
}

/// A requester's enrolment with `distributor`, if it has one: (epoch, key).
pub fn load_enrolment(
    dir: &Path,
    distributor: &libp2p::PeerId,
) -> Result<Option<otpmesh_protocol::kx::EpochKey>, KeyFileError> {
    let path = enrolment_path(dir, distributor);
    let Some(bytes) = read_secret(&path)? else {
        return Ok(None);
    };
    if bytes.len() != 40 {
        return Err(KeyFileError::Invalid {
            path,
            reason: format!("{} bytes, expected 40", bytes.len()),
        });
    }
    let epoch = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let key: [u8; 32] = bytes[8..].try_into().expect("32 bytes");
    Ok(Some(otpmesh_protocol::kx::EpochKey::new(epoch, key)))
}

/// Replaces the enrolment key with `distributor` (0600): the older epoch's key is gone.
pub fn store_enrolment(
    dir: &Path,
    distributor: &libp2p::PeerId,
    epoch: u64,
    key: &[u8; 32],
) -> Result<(), KeyFileError> {
    let path = enrolment_path(dir, distributor);
    let parent = path.parent().expect("enrolments/ has a parent");
    ensure_data_dir(parent)?;
    let mut bytes = Zeroizing::new(epoch.to_be_bytes().to_vec());
    bytes.extend_from_slice(key);
    write_file(&path, &bytes, 0o600)
}

/// The key that encrypts secrets in the node's database, created on first use.
pub fn load_or_create_store_key(dir: &Path) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let path = dir.join(STORE_KEY_FILE);
    if let Some(bytes) = read_secret(&path)? {
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::Invalid {
                path: path.clone(),
                reason: format!("{} bytes, expected 32", bytes.len()),
            })?;
        return Ok(Zeroizing::new(array));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    write_file(&path, key.as_ref(), 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn loose_permissions_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_identity(dir.path()).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_identity(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn every_secret_file_is_0600_its_dir_0700_and_loose_ones_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node");
        let distributor = libp2p::PeerId::random();
        // Each secret file with the call that reads it back.
        type Load = fn(&Path, &libp2p::PeerId) -> Result<(), KeyFileError>;
        let files: [(PathBuf, Load); 4] = [
            (dir.join(IDENTITY_FILE), |d, _| {
                load_or_create_identity(d).map(|_| ())
            }),
            (dir.join(STORE_KEY_FILE), |d, _| {
                load_or_create_store_key(d).map(|_| ())
            }),
            (dir.join(RSA_KEY_FILE), |d, _| {
                load_or_create_rsa(d, 2048).map(|_| ())
            }),
            (enrolment_path(&dir, &distributor), |d, p| {
                load_enrolment(d, p).map(|_| ())
            }),
        ];
        store_enrolment(&dir, &distributor, 1, &[7; 32]).unwrap();
        for (path, load) in &files {
            load(&dir, &distributor).unwrap();
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for (path, load) in &files {
            for loose in [0o640, 0o604] {
                fs::set_permissions(path, fs::Permissions::from_mode(loose)).unwrap();
                let err = load(&dir, &distributor).unwrap_err().to_string();
                assert!(err.contains("chmod 600"), "{}: {err}", path.display());
            }
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn rsa_key_persists_with_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_rsa(dir.path(), 2048).unwrap();
        let b = load_or_create_rsa(dir.path(), 2048).unwrap();
        assert_eq!(a.public().fingerprint(), b.public().fingerprint());
        let pem = fs::read_to_string(dir.path().join(RSA_PUBLIC_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        fs::write(dir.path().join(RSA_KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            load_or_create_rsa(dir.path(), 2048),
            Err(KeyFileError::Rsa { .. })
        ));
    }
}
