//! What a pool file asks for ([`PoolSpec`]), and what moving from one pool
//! file to the next takes ([`plan`]): a pure function of the two, so every
//! rule of a SIGHUP is unit-tested (`plan_tests.rs`) apart from the
//! processes that carry it out (`pools.rs`).

use std::time::Duration;

/// One pool of a pool file: workers running one plugin for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// The pool's name (its `[pool.NAME]` table): who it is from one file to the next.
    pub name: String,
    /// The plugin, as `--plugin` takes it (a path, or a bare name to search for).
    pub plugin: String,
    /// JSON for the plugin's init (`None`: none).
    pub params: Option<String>,
    /// How many workers it runs.
    pub workers: usize,
    /// Its workers leave after this long and are replaced (`None`: never).
    pub max_age: Option<Duration>,
    /// A job running longer is answered "timeout" (`None`: no limit).
    pub timeout: Option<Duration>,
    /// The service its workers register for (unique within a file).
    pub service: String,
}

impl PoolSpec {
    /// The same workers, whatever their count: what a running pool keeps
    /// when only `workers` changes.
    fn same_workers(&self, other: &PoolSpec) -> bool {
        PoolSpec { workers: other.workers, ..self.clone() } == *other
    }
}

/// One step from the running pools to those of a new file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new pool: start it.
    Start(PoolSpec),
    /// A pool whose workers differ (plugin, params, ages, timeout or
    /// service): start the new workers, then let the old ones finish their
    /// jobs and leave.
    Roll(PoolSpec),
    /// Only the worker count changed: scale the running pool.
    Scale {
        /// The pool.
        name: String,
        /// Its new worker count.
        workers: usize,
    },
    /// A pool no longer in the file: its workers unregister, finish their
    /// jobs and leave.
    Stop(String),
}

impl Change {
    /// Starts first, then rolls and scales, stops last: a service that moves
    /// from one pool to another (a renamed pool) has its new workers
    /// registered before the old ones leave, so no job finds it empty.
    fn order(&self) -> u8 {
        match self {
            Change::Start(_) => 0,
            Change::Roll(_) => 1,
            Change::Scale { .. } => 2,
            Change::Stop(_) => 3,
        }
    }
}

/// The changes that turn the pools `old` into `new` (pools are matched by
/// name; an unchanged pool gets none, so its workers are left alone).
/// Within each kind, changes follow the order of `new` (stops that of `old`).
pub fn plan(old: &[PoolSpec], new: &[PoolSpec]) -> Vec<Change> {
    let find = |pools: &[PoolSpec], name: &str| pools.iter().position(|p| p.name == name);
    let mut changes = Vec::new();
    for spec in new {
        match find(old, &spec.name).map(|i| &old[i]) {
            None => changes.push(Change::Start(spec.clone())),
            Some(was) if was == spec => {}
            Some(was) if was.same_workers(spec) => {
                changes.push(Change::Scale { name: spec.name.clone(), workers: spec.workers })
            }
            Some(_) => changes.push(Change::Roll(spec.clone())),
        }
    }
    for was in old {
        if find(new, &was.name).is_none() {
            changes.push(Change::Stop(was.name.clone()));
        }
    }
    // Stable: the order within each kind stays.
    changes.sort_by_key(Change::order);
    changes
}
