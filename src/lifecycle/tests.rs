//! The lifecycle on fake backends: the pipeline, teardown, reconciliation and races,
//! in seconds. The sandbox tests (tests/) run the same code on the real components.

use super::fakes::FakeHost;
use super::{Lifecycle, Phase};
use crate::actions::params::{ParamValue, Params};
use crate::actions::{Action, Actions, Answer};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Code;
use crate::messages::Language;
use crate::store::{AppRecord, NewApp, Store, Transition, UninstallRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Bench {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    store: Arc<Store>,
    host: Arc<FakeHost>,
    lifecycle: Arc<Lifecycle>,
    actions: Arc<Actions>,
}

fn bench(seed: u64, max_parallel_installs: usize) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config {
        state_dir: dir.path().join("state"),
        socket: dir.path().join("run/appunit.sock"),
        unit_dir: dir.path().join("units"),
        public_host: "127.0.0.1".into(),
        max_parallel_installs,
        ..Config::default()
    });
    std::fs::create_dir_all(config.state_dir.join("apps")).unwrap();
    let store = Arc::new(Store::open(&config.state_dir.join("appunit.db")).unwrap());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog");
    let catalog = Arc::new(Catalog::load(&[fixtures]).0);
    let host = FakeHost::new(seed);
    let lifecycle = Arc::new(Lifecycle::new(
        store.clone(),
        catalog.clone(),
        config.clone(),
        dir.path().join("config.toml"),
        host.backends(),
    ));
    let actions = Arc::new(Actions::new(
        store.clone(),
        catalog,
        config.clone(),
        lifecycle.clone(),
    ));
    Bench {
        _dir: dir,
        config,
        store,
        host,
        lifecycle,
        actions,
    }
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut params = Params::default();
    for (name, value) in pairs {
        params.set(name.to_string(), ParamValue::Text(value.to_string()));
    }
    params
}

impl Bench {
    async fn call(&self, action: Action, pairs: &[(&str, &str)]) -> Result<(), Code> {
        self.actions
            .call(action, &params(pairs), Language::English)
            .await
            .map(drop)
            .map_err(|e| {
                eprintln!("{:?}: {e}", e.code());
                e.code()
            })
    }

    async fn install(&self, app_id: &str) -> Result<(), Code> {
        let pairs = [
            ("app_name", "duo"),
            ("customer_app_name", app_id),
            ("app_version", "1"),
        ];
        self.call(Action::Install, &pairs).await
    }

    /// AppList's array of every app.
    async fn list(&self) -> bytes::Bytes {
        match self
            .actions
            .call(Action::List, &params(&[]), Language::English)
            .await
        {
            Ok(Answer::Json(array)) => array,
            _ => panic!("AppList answered no JSON"),
        }
    }

    async fn uninstall(&self, app_id: &str) -> Result<(), Code> {
        self.call(Action::Uninstall, &[("app_id", app_id)]).await
    }

    fn record(&self, app_id: &str) -> Option<AppRecord> {
        self.store.get(app_id).unwrap()
    }

    async fn until(&self, what: &str, done: impl Fn(&Bench) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "waited too long for {what}: {:?}, calls {:?}",
                self.store.list(None).unwrap(),
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn until_phase(&self, app_id: &str, phase: Phase) {
        self.until(&format!("{app_id} {phase:?}"), |b| {
            b.record(app_id).map(|r| r.phase) == Some(phase)
        })
        .await
    }

    /// Until AppStatus shows the app `status`.
    async fn until_status(&self, app_id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self
                .actions
                .call(
                    Action::Status,
                    &params(&[("app_id", app_id)]),
                    Language::English,
                )
                .await;
            let Ok(Answer::Json(shown)) = answer else {
                panic!("AppStatus answered no JSON")
            };
            let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
            if shown["status"] == status {
                return;
            }
            assert!(Instant::now() < deadline, "{app_id} not {status}: {shown}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn calls(&self) -> Vec<String> {
        self.host.world().calls.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_walks_every_phase_in_order() {
    let bench = bench(1, 2);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    bench.install("shop").await.unwrap();
    bench.until_phase("shop", Phase::Installed).await;
    let calls = bench.calls();
    let expected = [
        "pull 127.0.0.1:5000/test/busybox:1",
        "create shop-db",
        "create shop-web",
        "install appunit-shop.service",
        "enable appunit-shop.service",
        "start appunit-shop.service",
    ];
    let mut at = 0;
    for call in &calls {
        if at < expected.len() && call == expected[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "in order: {expected:?}; calls: {calls:?}"
    );
    let folder = bench.config.state_dir.join("apps/shop");
    assert!(folder.join("plan.json").exists() && folder.join("compose.yaml").exists());
    // The model hears of the store's last write just after it is made.
    bench.until_status("shop", "running").await;
    queue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_takes_no_app_before_events_showed_it_queued() {
    let bench = bench(7, 2);
    let mut events = bench.lifecycle.model().subscribe();
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    // Stored, as by an AppInstall whose answer is not yet back, while the queue reads.
    let app = NewApp {
        app_id: "early",
        app_name: "duo",
        app_version: "1",
        password: "secret",
        default_port: 9100,
        fixed_port: false,
    };
    bench.store.insert_queued(&app, &BTreeSet::new()).unwrap();
    bench.lifecycle.wake.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bench.record("early").unwrap().phase, Phase::Queuing);

    bench.lifecycle.queued("early");
    let mut shown = Vec::new();
    while shown.last() != Some(&Phase::Installed) {
        let app = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no event within 10 s")
            .unwrap();
        if shown.last() != Some(&app.record.phase) {
            shown.push(app.record.phase);
        }
    }
    assert_eq!(shown[..2], [Phase::Queuing, Phase::Pulling], "{shown:?}");
    queue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_list_is_joined_again_only_after_a_change() {
    let bench = bench(8, 2);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    bench.install("first").await.unwrap();
    bench.until_phase("first", Phase::Installed).await;
    // A first AppList may refresh the running app's usage (a change): it lands first.
    bench.list().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (once, again) = (bench.list().await, bench.list().await);
    assert_eq!(
        once.as_ptr(),
        again.as_ptr(),
        "the same array, not joined again"
    );

    bench.install("second").await.unwrap();
    bench.until_phase("second", Phase::Installed).await;
    let after: serde_json::Value = serde_json::from_slice(&bench.list().await).unwrap();
    let ids: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["first", "second"]);
    queue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_usage_is_read_once_per_running_app_and_put_in_at_once() {
    let bench = bench(9, 3);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    let apps = ["u1", "u2", "u3"];
    for app in apps {
        bench.install(app).await.unwrap();
    }
    for app in apps {
        bench.until_phase(app, Phase::Installed).await;
    }
    bench.list().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reads = || bench.host.world().usage_reads.len();
    let before = reads();

    // Three lists at once, each finding every app's figure old: one read per app.
    tokio::join!(bench.list(), bench.list(), bench.list());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reads() < before + apps.len() {
        assert!(std::time::Instant::now() < deadline, "usage was not read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        reads(),
        before + apps.len(),
        "{:?}",
        bench.host.world().usage_reads
    );

    let (once, again) = (bench.list().await, bench.list().await);
    assert_eq!(
        once.as_ptr(),
        again.as_ptr(),
        "joined again after the figures"
    );
    let shown: serde_json::Value = serde_json::from_slice(&once).unwrap();
    for app in shown.as_array().unwrap() {
        let slice = crate::app::slice_name(app["app_id"].as_str().unwrap());
        let read = bench
            .host
            .world()
            .usage_reads
            .iter()
            .filter(|r| **r == slice)
            .count();
        assert_eq!(app["usage"]["memory_bytes"], read, "{app}");
    }
    queue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_is_an_error_with_its_reason_and_leaves_nothing() {
    let bench = bench(2, 2);
    bench.host.pulls_fail.store(true, Ordering::SeqCst);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    bench.install("shop").await.unwrap();
    bench.until_phase("shop", Phase::Failed).await;
    let reason = bench.record("shop").unwrap().reason.unwrap();
    assert_eq!(reason.code, Code::ContainerError);
    assert!(
        reason.detail.contains("manifest unknown"),
        "{}",
        reason.detail
    );
    assert!(bench.host.leftovers("shop").is_empty());
    // Start, stop and restart refuse an app whose install failed.
    assert_eq!(
        bench.call(Action::Start, &[("app_id", "shop")]).await,
        Err(Code::ContainerError)
    );
    bench.uninstall("shop").await.unwrap();
    assert!(bench.record("shop").is_none());
    queue.abort();
}

/// If containerd was down when the install failed, nothing was made: the uninstall
/// needs no containerd. An app that has containers does need it, and is refused with
/// the cause until containerd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_that_made_nothing_uninstalls_while_containerd_is_down() {
    let bench = bench(3, 2);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    bench.host.containerd_down.store(true, Ordering::SeqCst);
    bench.install("early").await.unwrap();
    bench.until_phase("early", Phase::Failed).await;
    let reason = bench.record("early").unwrap().reason.unwrap();
    assert!(
        reason.detail.contains("connection refused"),
        "{}",
        reason.detail
    );
    bench.uninstall("early").await.unwrap();
    assert!(bench.record("early").is_none());

    bench.host.containerd_down.store(false, Ordering::SeqCst);
    bench.install("made").await.unwrap();
    bench.until_phase("made", Phase::Installed).await;
    bench.host.containerd_down.store(true, Ordering::SeqCst);
    assert_eq!(bench.uninstall("made").await, Err(Code::ContainerError));
    assert_eq!(bench.record("made").unwrap().phase, Phase::Uninstalling);
    bench.host.containerd_down.store(false, Ordering::SeqCst);
    bench.uninstall("made").await.unwrap();
    assert!(bench.record("made").is_none());
    assert!(bench.host.leftovers("made").is_empty());
    queue.abort();
}

/// AppUninstall lands at a random point of the queue's work on the app, 1,000 times;
/// half the names are installed again at once. No uninstalled app leaves anything, no
/// install works from an earlier record of its name, and every reinstall completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_racing_the_queue_a_thousand_times() {
    let bench = bench(4, 2);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    let mut rng = StdRng::seed_from_u64(4);
    let mut reinstalled = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for round in 0..1000 {
        let app_id = format!("race{round}");
        bench.install(&app_id).await.unwrap();
        for _ in 0..rng.random_range(0..60) {
            tokio::task::yield_now().await;
        }
        bench.uninstall(&app_id).await.unwrap();
        assert!(bench.record(&app_id).is_none(), "{app_id}");
        assert!(bench.host.leftovers(&app_id).is_empty(), "{app_id}");
        if rng.random_bool(0.5) {
            bench.install(&app_id).await.unwrap();
            reinstalled.insert(app_id);
        } else {
            gone.insert(app_id);
        }
    }
    bench
        .until("every reinstall", |b| {
            reinstalled
                .iter()
                .all(|id| b.record(id).is_some_and(|r| r.phase == Phase::Installed))
        })
        .await;
    for app_id in &reinstalled {
        let mut left = bench.host.leftovers(app_id);
        left.sort();
        let expected = [
            format!("container {app_id}-db"),
            format!("container {app_id}-web"),
            format!("appunit-{app_id}.service"),
            app_id.clone(),
        ];
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(left, expected);
    }
    for app_id in &gone {
        assert!(bench.record(app_id).is_none());
        assert!(bench.host.leftovers(app_id).is_empty(), "{app_id}");
    }
    assert_eq!(bench.lifecycle.registry.installs_running(), 0);
    queue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_installs_of_one_name_accept_exactly_one() {
    let bench = Arc::new(bench(5, 0));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let bench = bench.clone();
            tokio::spawn(async move { bench.install("same").await })
        })
        .collect();
    let mut accepted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(code) => assert!(
                matches!(
                    code,
                    Code::Busy | Code::CustomerAppNameWait | Code::CustomerAppNameRepeat
                ),
                "{code:?}"
            ),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(bench.store.list(None).unwrap().len(), 1);
}

/// At start-up, installs cut short go back to the queue without what they made, and an
/// uninstall cut short is finished as it was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_requeues_interrupted_installs_and_finishes_uninstalls() {
    let bench = bench(6, 0);
    let queued = |app_id: &str| {
        let app = NewApp {
            app_id,
            app_name: "duo",
            app_version: "1",
            password: "secret",
            default_port: 9100,
            fixed_port: false,
        };
        bench.store.insert_queued(&app, &BTreeSet::new()).unwrap()
    };
    let pulling = queued("pulling");
    bench
        .store
        .transition(&pulling, Transition::Dequeue, None)
        .unwrap();
    let creating = queued("creating");
    for step in [Transition::Dequeue, Transition::Pulled] {
        bench.store.transition(&creating, step, None).unwrap();
    }
    let folder = bench.config.state_dir.join("apps/creating");
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::write(folder.join("plan.json"), "{}").unwrap();
    bench
        .host
        .world()
        .containers
        .insert("creating-db".into(), "creating".into());
    let leaving = queued("leaving");
    let request = UninstallRequest {
        delete_data: true,
        delete_image: false,
    };
    bench.store.begin_uninstall(&leaving, request).unwrap();
    let leaving_data = bench.config.state_dir.join("apps/leaving/data");
    std::fs::create_dir_all(&leaving_data).unwrap();

    let started = tokio::spawn(bench.lifecycle.clone().reconcile());
    bench.until_phase("pulling", Phase::Queuing).await;
    bench.until_phase("creating", Phase::Queuing).await;
    bench
        .until("the uninstall", |b| b.record("leaving").is_none())
        .await;
    assert!(bench.host.leftovers("creating").is_empty());
    assert!(folder.join("data").exists(), "an install's data stays");
    assert!(!leaving_data.exists(), "delete_data was asked for");
    started.abort();
}

/// The upgrade on fakes: the new images pull before anything stops; success makes the
/// new version the app's and keeps the old one's backup; a failed pull rolls back with
/// the old version untouched and no rollback point left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_succeeds_or_rolls_back_on_the_install_phases() {
    use crate::store::OperationResult;
    let bench = bench(7, 2);
    let queue = tokio::spawn(bench.lifecycle.clone().run_queue());
    bench.install("up").await.unwrap();
    bench.until_phase("up", Phase::Installed).await;
    let upgrade = |version: &'static str| {
        let bench = &bench;
        async move {
            bench
                .call(
                    Action::Upgrade,
                    &[("app_id", "up"), ("app_version", version)],
                )
                .await
        }
    };
    let ended = |b: &Bench| {
        b.record("up").is_some_and(|r| {
            r.operation.is_none()
                && r.last_operation
                    .as_ref()
                    .is_some_and(|l| l.kind == crate::store::OperationKind::Upgrade)
        })
    };
    assert_eq!(upgrade("9").await, Err(Code::AppVersionNotExist));
    upgrade("2").await.unwrap();
    assert_eq!(upgrade("2").await, Err(Code::Busy));
    bench.until("the upgrade to 2", ended).await;
    let record = bench.record("up").unwrap();
    assert_eq!(record.app_version, "2");
    let last = record.last_operation.unwrap();
    assert_eq!(last.result, OperationResult::Succeeded);
    assert!(
        last.downtime_ms.is_some(),
        "the running app's downtime is known"
    );
    let calls = bench.calls();
    let pulled = calls
        .iter()
        .position(|c| c == "pull 127.0.0.1:5000/test/busybox:2");
    let stopped = calls.iter().rposition(|c| c == "stop appunit-up.service");
    assert!(pulled.is_some() && pulled < stopped, "{calls:?}");
    let backups = std::fs::read_dir(bench.config.backup_dir())
        .unwrap()
        .count();
    assert!(backups > 0, "the old version's backup is kept");
    // The rollback point goes right after the outcome is recorded.
    let point = bench.config.state_dir.join("apps/up/upgrade.json");
    bench
        .until("the rollback point to go", |_| !point.exists())
        .await;

    // The last operation ends just after its rollback point goes.
    let upgrade_when_free = |version: &'static str| async move {
        loop {
            match upgrade(version).await {
                Err(Code::Busy) => tokio::time::sleep(Duration::from_millis(10)).await,
                started => break started.unwrap(),
            }
        }
    };
    bench.host.pulls_fail.store(true, Ordering::SeqCst);
    upgrade_when_free("1").await;
    bench
        .until("the rollback", |b| {
            b.record("up")
                .is_some_and(|r| r.operation.is_none() && r.reason.is_some())
        })
        .await;
    let record = bench.record("up").unwrap();
    assert_eq!(
        (record.phase, record.app_version.as_str()),
        (Phase::Installed, "2")
    );
    let last = record.last_operation.unwrap();
    assert_eq!(last.result, OperationResult::RolledBack);
    assert!(last.reason.unwrap().detail.contains("manifest unknown"));
    assert_eq!(last.downtime_ms, Some(0), "a failed pull stops nothing");
    assert!(
        bench.host.world().units["appunit-up.service"],
        "still running"
    );
    bench
        .until("the rollback point to go", |_| !point.exists())
        .await;

    // When the old version cannot be made again either, its data stays in the
    // rollback point's backup, which the failed app names.
    bench.host.pulls_fail.store(false, Ordering::SeqCst);
    bench.host.creates_fail.store(true, Ordering::SeqCst);
    let backups = || {
        std::fs::read_dir(bench.config.backup_dir())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("zst".as_ref()))
            .count()
    };
    let kept_before = backups();
    upgrade_when_free("1").await;
    bench
        .until("the failed rollback", |b| {
            b.record("up").is_some_and(|r| r.phase == Phase::Failed)
        })
        .await;
    let last = bench.record("up").unwrap().last_operation.unwrap();
    assert_eq!(last.result, OperationResult::Failed);
    let detail = last.reason.unwrap().detail;
    assert!(
        detail.contains("no space left") && detail.contains("in the backup up-"),
        "{detail}"
    );
    assert_eq!(backups(), kept_before + 1, "the rollback point is kept");
    queue.abort();
}
