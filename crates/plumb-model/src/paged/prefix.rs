//! The prefix index of a paged pool: full blocks named by a hash chain of their tokens, and
//! the least-recently-used list of the indexed blocks that no sequence holds.
//!
//! Block `i` of a sequence is named `h_i = H(identity, h_{i-1}, tokens[i*bs .. (i+1)*bs])`
//! with `h_{-1} = 0`: two sequences that share their first `k` full blocks of tokens share
//! `h_0 .. h_{k-1}`, and a block's name says everything that went into its keys and values
//! (the causal model sees only earlier positions). Each indexed block also keeps its parent
//! name and its tokens, so a lookup compares the tokens themselves and a hash collision can
//! never hand out the wrong keys.
//!
//! The LRU list is intrusive (`prev`/`next` per block): pushing, unlinking and evicting are
//! O(1) and allocate nothing.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// No block (the ends of the LRU list).
const NIL: u32 = u32::MAX;

pub(crate) struct PrefixIndex {
    /// Mixed into every name: the model whose keys and values the pool holds.
    identity: u64,
    block_size: usize,
    /// Name → the block indexed under it.
    by_name: HashMap<u64, u32>,
    /// Per block: its name once it was full and named (indexed or not).
    name: Vec<Option<u64>>,
    /// Per block: whether `by_name` points at it (a second block with the same contents,
    /// computed at the same time by another sequence, is named but not indexed).
    indexed: Vec<bool>,
    /// Per indexed block: its parent's name and its tokens (`[n_blocks * block_size]`).
    parent: Vec<u64>,
    tokens: Vec<u32>,
    /// The LRU list of indexed blocks with no reference, oldest first.
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    idle: usize,
}

impl PrefixIndex {
    pub(crate) fn new(identity: u64, n_blocks: usize, block_size: usize) -> Self {
        PrefixIndex {
            identity,
            block_size,
            by_name: HashMap::new(),
            name: vec![None; n_blocks],
            indexed: vec![false; n_blocks],
            parent: vec![0; n_blocks],
            tokens: vec![0; n_blocks * block_size],
            prev: vec![NIL; n_blocks],
            next: vec![NIL; n_blocks],
            head: NIL,
            tail: NIL,
            idle: 0,
        }
    }

    /// The name of a block of `tokens` after a block named `parent`.
    fn chain(&self, parent: u64, tokens: &[u32]) -> u64 {
        let mut h = DefaultHasher::new();
        self.identity.hash(&mut h);
        parent.hash(&mut h);
        tokens.hash(&mut h);
        h.finish()
    }

    pub(crate) fn name(&self, blk: u32) -> Option<u64> {
        self.name[blk as usize]
    }

    pub(crate) fn is_indexed(&self, blk: u32) -> bool {
        self.indexed[blk as usize]
    }

    /// Names the full block `blk` holding `tokens` after `parent`, and indexes it unless
    /// another block holds the same name. Returns its name.
    pub(crate) fn record(&mut self, blk: u32, parent: u64, tokens: &[u32]) -> u64 {
        let name = self.chain(parent, tokens);
        let b = blk as usize;
        self.name[b] = Some(name);
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_name.entry(name) {
            e.insert(blk);
            self.indexed[b] = true;
            self.parent[b] = parent;
            let bs = self.block_size;
            self.tokens[b * bs..(b + 1) * bs].copy_from_slice(tokens);
        }
        name
    }

    /// The indexed block holding `tokens` after `parent`, and its name.
    pub(crate) fn find(&self, parent: u64, tokens: &[u32]) -> Option<(u32, u64)> {
        let name = self.chain(parent, tokens);
        let &blk = self.by_name.get(&name)?;
        let (b, bs) = (blk as usize, self.block_size);
        let same = self.parent[b] == parent && self.tokens[b * bs..(b + 1) * bs] == *tokens;
        same.then_some((blk, name))
    }

    /// Takes `blk`'s name out of the index (its contents are about to change).
    pub(crate) fn forget(&mut self, blk: u32) {
        let b = blk as usize;
        if self.indexed[b] {
            if let Some(name) = self.name[b] {
                self.by_name.remove(&name);
            }
            self.indexed[b] = false;
        }
        self.name[b] = None;
    }

    /// Indexed blocks that no sequence holds (evictable).
    pub(crate) fn idle(&self) -> usize {
        self.idle
    }

    /// Appends `blk` (indexed, no references left) as the most recently used idle block.
    pub(crate) fn push_idle(&mut self, blk: u32) {
        let b = blk as usize;
        self.prev[b] = self.tail;
        self.next[b] = NIL;
        match self.tail {
            NIL => self.head = blk,
            t => self.next[t as usize] = blk,
        }
        self.tail = blk;
        self.idle += 1;
    }

    /// Unlinks the idle block `blk` (a sequence takes it again).
    pub(crate) fn take_idle(&mut self, blk: u32) {
        let b = blk as usize;
        let (p, n) = (self.prev[b], self.next[b]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.prev[b] = NIL;
        self.next[b] = NIL;
        self.idle -= 1;
    }

    /// Evicts the least recently used idle block: unlinked and forgotten, free to reuse.
    pub(crate) fn evict(&mut self) -> Option<u32> {
        let blk = self.head;
        if blk == NIL {
            return None;
        }
        self.take_idle(blk);
        self.forget(blk);
        Some(blk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_chain_and_lookups_compare_tokens() {
        let mut ix = PrefixIndex::new(7, 4, 2);
        let a = ix.record(0, 0, &[1, 2]);
        let b = ix.record(1, a, &[3, 4]);
        assert_eq!(ix.find(0, &[1, 2]), Some((0, a)));
        assert_eq!(ix.find(a, &[3, 4]), Some((1, b)));
        // Same tokens after another parent, or under another model: another name.
        assert_eq!(ix.find(b, &[3, 4]), None);
        assert_ne!(PrefixIndex::new(8, 4, 2).chain(0, &[1, 2]), a);
        // A second block with the same contents is named but not indexed.
        assert_eq!(ix.record(2, 0, &[1, 2]), a);
        assert!(!ix.is_indexed(2) && ix.is_indexed(0));
        ix.forget(2);
        assert_eq!(ix.find(0, &[1, 2]), Some((0, a)));
        ix.forget(0);
        assert_eq!(ix.find(0, &[1, 2]), None);
    }

    #[test]
    fn the_idle_list_evicts_the_least_recently_used() {
        let mut ix = PrefixIndex::new(0, 4, 1);
        for blk in 0..4 {
            ix.record(blk, blk as u64, &[blk]);
            ix.push_idle(blk);
        }
        ix.take_idle(0); // used again: 1, 2, 3 remain, oldest first
        ix.take_idle(2);
        ix.push_idle(0);
        assert_eq!(ix.idle(), 3);
        assert_eq!(ix.evict(), Some(1));
        assert_eq!(ix.find(1, &[1]), None, "an evicted block leaves the index");
        assert_eq!(ix.evict(), Some(3));
        assert_eq!(ix.evict(), Some(0));
        assert_eq!((ix.evict(), ix.idle()), (None, 0));
    }
}
