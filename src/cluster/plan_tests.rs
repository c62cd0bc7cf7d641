//! Unit tests of [`plan`]: what a SIGHUP does to each pool, decided without
//! starting a process.

use std::time::Duration;

use super::plan::*;

/// Pool `name` of test_plugin for service `name`, two workers.
fn pool(name: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        plugin: "libtest_plugin.so".into(),
        params: None,
        workers: 2,
        max_age: None,
        timeout: Some(Duration::from_secs(30)),
        service: name.into(),
    }
}

fn with(name: &str, f: impl FnOnce(&mut PoolSpec)) -> PoolSpec {
    let mut spec = pool(name);
    f(&mut spec);
    spec
}

#[test]
fn the_same_file_changes_nothing() {
    let pools = [pool("a"), pool("b")];
    assert_eq!(plan(&pools, &pools), []);
    assert_eq!(plan(&[], &[]), []);
}

#[test]
fn a_first_file_starts_every_pool_in_its_order() {
    assert_eq!(plan(&[], &[pool("b"), pool("a")]), [Change::Start(pool("b")), Change::Start(pool("a"))]);
}

#[test]
fn new_pools_start_and_removed_ones_stop() {
    let changes = plan(&[pool("a"), pool("b")], &[pool("a"), pool("c")]);
    assert_eq!(changes, [Change::Start(pool("c")), Change::Stop("b".into())]);
    assert_eq!(plan(&[pool("a")], &[]), [Change::Stop("a".into())]);
}

#[test]
fn a_pool_whose_workers_differ_is_rolled() {
    let tagged = with("b", |p| p.params = Some(r#"{"version_tag":"-2"}"#.into()));
    assert_eq!(plan(&[pool("a"), pool("b")], &[pool("a"), tagged.clone()]), [Change::Roll(tagged)]);
    for changed in [
        with("a", |p| p.plugin = "libecho.so".into()),
        with("a", |p| p.max_age = Some(Duration::from_secs(60))),
        with("a", |p| p.timeout = None),
        with("a", |p| p.service = "other".into()),
    ] {
        assert_eq!(plan(&[pool("a")], std::slice::from_ref(&changed)), [Change::Roll(changed.clone())]);
    }
}

#[test]
fn only_a_new_worker_count_scales_the_pool_in_place() {
    let more = with("a", |p| p.workers = 5);
    assert_eq!(plan(&[pool("a")], &[more]), [Change::Scale { name: "a".into(), workers: 5 }]);
    // With anything else changed too, the new workers come at the new count.
    let both = with("a", |p| {
        p.workers = 5;
        p.params = Some("{}".into());
    });
    assert_eq!(plan(&[pool("a")], std::slice::from_ref(&both)), [Change::Roll(both.clone())]);
}

#[test]
fn starts_come_first_and_stops_last() {
    // Pool "old" is renamed "new" for the same service: "new" must serve
    // before "old" leaves.
    let (old, new) = (with("old", |p| p.service = "s".into()), with("new", |p| p.service = "s".into()));
    let changes = plan(
        &[old, pool("rolled"), pool("scaled")],
        &[with("scaled", |p| p.workers = 1), with("rolled", |p| p.timeout = None), new.clone()],
    );
    assert_eq!(
        changes,
        [
            Change::Start(new),
            Change::Roll(with("rolled", |p| p.timeout = None)),
            Change::Scale { name: "scaled".into(), workers: 1 },
            Change::Stop("old".into()),
        ]
    );
}

#[test]
fn pools_are_matched_by_name_not_position() {
    assert_eq!(plan(&[pool("a"), pool("b")], &[pool("b"), pool("a")]), []);
}
