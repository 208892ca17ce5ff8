//! The key of a full KV block in the prefix cache: a SHA-256 chain over the block's parent key,
//! its token ids and its extra keys (the request's `cache_salt`, first block only).
//!
//! vLLM keyed blocks with Python's built-in `hash` and later a 64-bit hash; a crafted prompt could
//! then collide with another request's block and read its cached KV (CVE-2025-25183). vLLM moved
//! to SHA-256 and added a per-request `cache_salt` folded into the first block's extra keys, so
//! that requests with different salts never share a block. Kestrel does the same, and the pool
//! compares a cached block's own tokens and salt on every hit as well, so a hit never rests on
//! the hash of the block itself (see `BlockPool::cached_block`).
//!
//! The encoding is unambiguous: the parent is a fixed 32 bytes (or a distinct root marker), the
//! token count and salt length are prefixed, and each token is 4 little-endian bytes.

use sha2::{Digest, Sha256};

/// A request's `cache_salt` (vLLM's field), reduced to a fixed-size digest. Sequences with
/// different salts never share prefix-cache blocks; no salt is its own tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheSalt(pub [u8; 32]);

impl CacheSalt {
    /// Digest of a salt string, as sent in a request or built by the server (e.g. per API key).
    pub fn new(salt: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"kestrel cache_salt v1\0");
        h.update(salt.as_bytes());
        CacheSalt(h.finalize().into())
    }
}

impl CacheSalt {
    /// The salt of blocks computed under kernel mode `mode` for a request salted `base` (or
    /// unsalted): its own hash domain, so it equals no salt a request can send.
    pub fn for_kernels(base: Option<&CacheSalt>, mode: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"kestrel kernel mode v1\0");
        h.update((mode.len() as u64).to_le_bytes());
        h.update(mode.as_bytes());
        match base {
            Some(b) => {
                h.update([1u8]);
                h.update(b.0);
            }
            None => h.update([0u8]),
        }
        CacheSalt(h.finalize().into())
    }
}

/// Chained SHA-256 key of a full block: `H(parent key, token ids, extra keys)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u8; 32]);

impl std::fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockHash(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl BlockHash {
    /// The key of a block whose predecessor has key `parent` (`None` for a sequence's first
    /// block, which alone carries the `salt`).
    pub fn chain(parent: Option<BlockHash>, tokens: &[u32], salt: Option<&CacheSalt>) -> Self {
        let mut h = Sha256::new();
        match parent {
            Some(p) => {
                h.update([1u8]);
                h.update(p.0);
            }
            None => h.update([0u8]),
        }
        h.update((tokens.len() as u64).to_le_bytes());
        for &t in tokens {
            h.update(t.to_le_bytes());
        }
        match salt {
            Some(s) => {
                h.update([1u8]);
                h.update(s.0);
            }
            None => h.update([0u8]),
        }
        BlockHash(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_input() {
        let a = BlockHash::chain(None, &[1, 2, 3, 4], None);
        assert_eq!(a, BlockHash::chain(None, &[1, 2, 3, 4], None));
        assert_ne!(a, BlockHash::chain(None, &[1, 2, 3, 5], None));
        assert_ne!(a, BlockHash::chain(None, &[1, 2, 3], None));
        let salt = CacheSalt::new("tenant-a");
        assert_ne!(a, BlockHash::chain(None, &[1, 2, 3, 4], Some(&salt)));
        assert_ne!(
            BlockHash::chain(None, &[1, 2, 3, 4], Some(&CacheSalt::new("tenant-b"))),
            BlockHash::chain(None, &[1, 2, 3, 4], Some(&salt))
        );
        assert_ne!(
            BlockHash::chain(Some(a), &[1, 2, 3, 4], None),
            BlockHash::chain(
                Some(BlockHash::chain(None, &[9], None)),
                &[1, 2, 3, 4],
                None
            )
        );
        // The root marker is not a parent of all zeroes.
        assert_ne!(
            BlockHash::chain(None, &[7], None),
            BlockHash::chain(Some(BlockHash([0; 32])), &[7], None)
        );
    }

    #[test]
    fn kernel_mode_salts_are_their_own_tenants() {
        let a = CacheSalt::new("tenant-a");
        let inv = CacheSalt::for_kernels(Some(&a), "batch-invariant");
        assert_ne!(inv, a);
        assert_ne!(inv, CacheSalt::for_kernels(None, "batch-invariant"));
        assert_ne!(inv, CacheSalt::new("tenant-a\0batch-invariant"));
        assert_eq!(inv, CacheSalt::for_kernels(Some(&a), "batch-invariant"));
    }

    /// The digest is fixed across builds and machines: known answers (Python's `hashlib` over
    /// the same encoding) guard it.
    #[test]
    fn known_answers() {
        let hex = |h: BlockHash| h.0.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(BlockHash::chain(None, &[0, 1, 2], None)),
            "cd0353fed3719f29dfdbdbe86d9260de045715cb38faf482f68259df2c259f5b"
        );
        assert_eq!(
            hex(BlockHash::chain(
                None,
                &[0, 1, 2],
                Some(&CacheSalt::new("tenant-a"))
            )),
            "8da5d18e77895aaff867754be635d0f6ebcf301b4595855b101d883a2218e71d"
        );
    }
}
