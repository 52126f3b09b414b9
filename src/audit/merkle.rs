//! The Merkle tree of a transparency log (RFC 9162 §2.1, the hashing of RFC 6962): tree heads,
//! inclusion proofs (a record is in the log a head commits to) and consistency proofs (a later
//! head extends an earlier one: nothing was removed, reordered or rewritten).
//!
//! Leaves are hashed `SHA-256(0x00 || data)`, interior nodes `SHA-256(0x01 || left || right)`,
//! and the empty tree's head is `SHA-256()`. Trees split at the largest power of two below
//! their size, so every implementation of RFC 9162 computes the same heads and proofs: the
//! tests check the Certificate Transparency reference vectors.
//!
//! Proofs are built from the list of leaf hashes (linear in the log's size); verification needs
//! only the proof, the sizes and the heads. A [`Frontier`] grows a tree one leaf at a time in
//! constant memory, for walking a log too large to hold.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, a node or a tree head.
pub type Hash = [u8; 32];

/// The hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The head of the tree whose leaves hash to `leaves`, in order (`SHA-256()` when empty).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [leaf] => *leaf,
        _ => {
            let k = split(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// A tree grown one leaf at a time, holding only the heads of its perfect subtrees (one per
/// bit of its size, at most 64) and the newest leaf's path inside the smallest of them: the head
/// of a log of any size in constant memory, and the newest leaf's inclusion proof.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Heads of the perfect subtrees, largest (leftmost) first.
    subtrees: Vec<Hash>,
    /// The siblings met by the newest leaf on its way up its own subtree, lowest first.
    last_path: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf hashed to `leaf`.
    pub fn push(&mut self, leaf: Hash) {
        self.last_path.clear();
        let mut node = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self
                .subtrees
                .pop()
                .expect("one subtree per set bit of the size");
            self.last_path.push(left);
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// The tree's head: the same as [`root`] of all leaves pushed.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        match subtrees.next() {
            None => root(&[]),
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// The inclusion proof of the newest leaf (index `size - 1`), as [`inclusion_proof`] gives.
    pub fn last_proof(&self) -> Vec<Hash> {
        let left_of_own = self.subtrees.len().saturating_sub(1);
        let mut proof = self.last_path.clone();
        proof.extend(self.subtrees[..left_of_own].iter().rev());
        proof
    }

    /// The parts a [`Frontier::resume`] needs: subtree heads and the newest leaf's path.
    pub fn parts(&self) -> (&[Hash], &[Hash]) {
        (&self.subtrees, &self.last_path)
    }

    /// Rebuilds the tree of `size` leaves whose head is `head` and whose newest leaf hashes to
    /// `leaf`, from [`Frontier::parts`] kept earlier. `None` unless the parts prove exactly
    /// that: stored parts need not be trusted, only the (signed) head and the leaf.
    pub fn resume(
        size: u64,
        head: &Hash,
        leaf: &Hash,
        subtrees: Vec<Hash>,
        last_path: Vec<Hash>,
    ) -> Option<Frontier> {
        if size == 0
            || subtrees.len() != size.count_ones() as usize
            || last_path.len() != size.trailing_zeros() as usize
        {
            return None;
        }
        let frontier = Frontier {
            size,
            subtrees,
            last_path,
        };
        (frontier.root() == *head
            && verify_inclusion(size - 1, size, leaf, &frontier.last_proof(), head))
        .then_some(frontier)
    }
}

/// The largest power of two below `n` (for `n >= 2`): where RFC 9162 splits a tree of `n`.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (RFC 9162 `PATH`), or `None`
/// when there is no such leaf.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Some(proof)
}

fn path(index: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if index < k {
        path(index, &leaves[..k], proof);
        proof.push(root(&leaves[k..]));
    } else {
        path(index - k, &leaves[k..], proof);
        proof.push(root(&leaves[..k]));
    }
}

/// The proof that the tree of `leaves` extends its first `old_size` leaves (RFC 9162 `PROOF`),
/// or `None` unless `0 < old_size <= leaves.len()`. Equal sizes need no proof (it is empty).
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if old_size == 0 || old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    subproof(old_size, leaves, true, &mut proof);
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Whether `proof` shows that `leaf` is leaf `index` of the tree of `size` whose head is
/// `head` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], head: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *head
}

/// Whether `proof` shows that the tree of `new_size` with head `new_head` extends the tree of
/// `old_size` with head `old_head` (RFC 9162 §2.1.4.2). Equal sizes need equal heads and an
/// empty proof; the empty tree is extended by every tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_head: &Hash,
    new_head: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_head == new_head;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_head == root(&[]);
    }
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_head
    } else {
        match path.next() {
            Some(first) => *first,
            None => return false,
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && fr == *old_head && sr == *new_head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(text: &str) -> Hash {
        unhex(text).try_into().unwrap()
    }

    /// The Certificate Transparency reference leaves (RFC 6962 test data).
    fn reference_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|data| leaf_hash(&unhex(data)))
        .collect()
    }

    #[test]
    fn heads_match_the_reference_vectors_for_every_size() {
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = reference_leaves();
        for (size, expected) in roots.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), hex(expected), "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_vectors() {
        let leaves = reference_leaves();
        for (index, expected) in [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let proof = inclusion_proof(index, &leaves).unwrap();
            assert_eq!(proof, expected.map(hex), "leaf {index}");
        }
    }

    #[test]
    fn a_consistency_proof_matches_the_reference_vector() {
        let leaves = reference_leaves();
        let proof = consistency_proof(2, &leaves[..5]).unwrap();
        assert_eq!(
            proof,
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
            .map(hex)
        );
    }

    /// Leaves for trees of every shape up to 37 leaves.
    fn many() -> Vec<Hash> {
        (0u8..37)
            .map(|i| leaf_hash(&[i, i.wrapping_mul(7)]))
            .collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_altered_one_does() {
        let leaves = many();
        for size in 1..=leaves.len() {
            let tree = &leaves[..size];
            let head = root(tree);
            for index in 0..size {
                let proof = inclusion_proof(index, tree).unwrap();
                let (i, n) = (index as u64, size as u64);
                assert!(verify_inclusion(i, n, &tree[index], &proof, &head));
                // Another leaf, another position, a changed or shortened proof. (The size is
                // bound by the signed checkpoint that carries the head: sizes whose paths have
                // the same shape, such as leaf 0 of 3 and of 4, give the same computation.)
                let other = leaf_hash(b"other");
                assert!(!verify_inclusion(i, n, &other, &proof, &head));
                assert!(!verify_inclusion(i + 1, n, &tree[index], &proof, &head));
                if let Some((last, rest)) = proof.split_last() {
                    assert!(!verify_inclusion(i, n, &tree[index], rest, &head));
                    let mut changed = proof.clone();
                    changed[rest.len()] = node_hash(last, last);
                    assert!(!verify_inclusion(i, n, &tree[index], &changed, &head));
                }
            }
            assert!(inclusion_proof(size, tree).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_no_altered_one_does() {
        let leaves = many();
        for new_size in 1..=leaves.len() {
            let new_head = root(&leaves[..new_size]);
            for old_size in 1..=new_size {
                let old_head = root(&leaves[..old_size]);
                let proof = consistency_proof(old_size, &leaves[..new_size]).unwrap();
                let (m, n) = (old_size as u64, new_size as u64);
                assert!(
                    verify_consistency(m, n, &old_head, &new_head, &proof),
                    "{old_size} -> {new_size}"
                );
                // A rewritten old tree, a head of another size, a shortened proof.
                let rewritten = {
                    let mut old = leaves[..old_size].to_vec();
                    old[old_size - 1] = leaf_hash(b"rewritten");
                    root(&old)
                };
                assert!(!verify_consistency(m, n, &rewritten, &new_head, &proof));
                if old_size < new_size {
                    let wrong_new = root(&leaves[..new_size - 1]);
                    assert!(!verify_consistency(m, n, &old_head, &wrong_new, &proof));
                    assert!(!verify_consistency(m, n, &old_head, &new_head, &proof[1..]));
                    // The new tree is not an extension of a longer old one: truncation.
                    assert!(!verify_consistency(n, m, &new_head, &old_head, &proof));
                }
            }
        }
        // The empty tree is extended by every tree; nothing shorter extends a longer one.
        let empty = root(&[]);
        assert!(verify_consistency(0, 5, &empty, &root(&leaves[..5]), &[]));
        assert!(consistency_proof(0, &leaves).is_none());
    }

    #[test]
    fn a_frontier_grows_the_same_heads_and_newest_proofs_as_the_whole_tree() {
        let leaves = many();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), root(&[]));
        for size in 1..=leaves.len() {
            frontier.push(leaves[size - 1]);
            let tree = &leaves[..size];
            assert_eq!(frontier.size(), size as u64);
            assert_eq!(frontier.root(), root(tree), "size {size}");
            assert_eq!(
                frontier.last_proof(),
                inclusion_proof(size - 1, tree).unwrap()
            );
            let (subtrees, path) = frontier.parts();
            let (subtrees, path) = (subtrees.to_vec(), path.to_vec());
            let head = root(tree);
            let n = size as u64;
            let resumed =
                Frontier::resume(n, &head, &tree[size - 1], subtrees.clone(), path.clone());
            assert_eq!(resumed.as_ref(), Some(&frontier));
            // Parts that do not prove the signed head and newest leaf are refused.
            let other = leaf_hash(b"other");
            assert!(Frontier::resume(n, &head, &other, subtrees.clone(), path.clone()).is_none());
            assert!(
                Frontier::resume(n, &other, &tree[size - 1], subtrees.clone(), path.clone())
                    .is_none()
            );
            assert!(
                Frontier::resume(
                    n + 1,
                    &head,
                    &tree[size - 1],
                    subtrees.clone(),
                    path.clone()
                )
                .is_none()
            );
            let mut bent = subtrees.clone();
            bent[0] = other;
            assert!(Frontier::resume(n, &head, &tree[size - 1], bent, path).is_none());
        }
    }
}
