//! At-least-once without the hole, proven deterministically on Apache Kafka: a
//! test-only fault point aborts `cxpulse run` right after its Nth changelog
//! record is on the broker, swept over N (inside the write-ahead chunks, the
//! per-key records, the meta record and the chunk tombstones of a flush),
//! each followed by a restart; afterwards every window and profile equals the
//! model. Needs the `fault-injection` feature (`scripts/test` enables it).

mod common;

use std::time::Duration;

use common::instance::Instance;
use common::scenario::{self, Scenario};
use common::Broker;
use cxpulse::decode::Format;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_after_any_changelog_record_changes_no_result() {
    let broker = Broker::kafka();
    let mut config = common::test_config(&broker, "crash-points");
    // Static membership: each restart takes the tasks back at once, no session to wait out.
    config.kafka.group_instance_id = "crash-points-0".into();
    // Small cycles, each flushing the state, so that one instance's life holds
    // several flushes.
    config.processing.batch_max_records = 200;
    config.kafka.commit_interval = Duration::from_millis(1);
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 4.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 91);
    let producer = common::producer(&broker);
    let (first, second) = events.split_at(events.len() / 2);
    common::produce_events(&producer, &config, first, Format::Json).await;
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!("cxpulse-crash-points-{}.log", std::process::id()));
    // Positions 1-8 fall inside the first flush (chunks, first per-key records);
    // the larger ones inside later flushes, wherever their records happen to end.
    let sweep = [1u64, 2, 3, 4, 5, 6, 7, 8, 13, 21, 34, 55, 89, 144, 233, 377];
    let mut aborted = 0;
    for (index, records) in sweep.iter().enumerate() {
        if index == sweep.len() / 2 {
            common::produce_events(&producer, &config, second, Format::Json).await;
        }
        let mut instance = Instance::start_with(
            &config,
            &address,
            &log,
            &[(
                cxpulse::fault::ABORT_AFTER_CHANGELOG_RECORDS,
                &records.to_string(),
            )],
        );
        match instance.wait_exit(Duration::from_secs(40)).await {
            Some(status) => {
                let signal = std::os::unix::process::ExitStatusExt::signal(&status);
                assert_eq!(
                    signal,
                    Some(6),
                    "expected an abort after {records} records: {status}"
                );
                aborted += 1;
            }
            // Nothing left to write that many records for: stop it and go on.
            None => instance.terminate(),
        }
    }
    assert!(
        aborted >= 10,
        "only {aborted} of {} fault points were reached",
        sweep.len()
    );
    let mut instance = Instance::start(&config, &address, &log);
    instance.wait_ready().await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "{aborted} aborts at changelog records {sweep:?} of successive instances over {} events: {compared}",
        events.len()
    );
    instance.terminate();
}
