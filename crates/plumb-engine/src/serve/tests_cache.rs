//! Streams and the prefix cache on the tiny model: a receiver that is never read or that is
//! dropped stalls nobody and gives its blocks back; a stop string found by the receiver ends
//! the choice in the engine; a cached prefix changes no text (alone, shared by running
//! requests, forked, under pressure) and is reported.

use std::time::Duration;

use super::tests::{collect, collect_cached, config, greedy, prompt, start, start_kv, wait_for};
use super::*;

#[test]
fn a_receiver_never_read_stalls_nobody_and_its_blocks_come_back() {
    let h = start(config(4));
    let unread = h.submit(greedy(prompt(40, 20), 60)).expect("submit");
    for i in 0..3 {
        let out = collect(h.submit(greedy(prompt(41 + i, 6), 10)).expect("submit"), 1);
        assert_eq!(out[0].tokens.len(), 10);
    }
    wait_for(&h, "the unread request ran to its end", |m| {
        m.requests_with(RequestStatus::Completed) == 4
            && m.running_sequences == 0
            && m.kv_bytes_used == 0
    });
    // Every event waited in the channel, in order.
    let late = collect(unread, 1);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].tokens.len(), 60);
    let again = collect(h.submit(greedy(prompt(40, 20), 60)).expect("submit"), 1);
    assert_eq!(late, again);
    h.shutdown();
}

#[test]
fn a_dropped_receiver_frees_its_blocks_while_others_run() {
    let h = start(config(4));
    let alone = collect(h.submit(greedy(prompt(51, 9), 40)).expect("submit"), 1);
    let mut gone = h.submit(greedy(prompt(50, 9), 200)).expect("submit");
    let other = h.submit(greedy(prompt(51, 9), 40)).expect("submit");
    assert!(matches!(
        gone.recv_timeout(Duration::from_secs(30)),
        Ok(Some(Event::Token(_)))
    ));
    drop(gone);
    assert_eq!(collect(other, 1), alone);
    wait_for(&h, "everything freed", |m| {
        m.running_sequences == 0
            && m.kv_bytes_used == 0
            && m.requests_with(RequestStatus::Cancelled) == 1
            && m.requests_with(RequestStatus::Completed) == 2
    });
    h.shutdown();
}

#[test]
fn a_stop_string_found_by_the_receiver_ends_the_choice_in_the_engine() {
    let h = start(config(4));
    let base = collect(h.submit(greedy(prompt(6, 5), 16)).expect("submit"), 1).remove(0);
    let chars: Vec<char> = base.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut with_stop = greedy(prompt(6, 5), 200);
    with_stop.stop = vec![stop.clone()];
    let cut = collect(h.submit(with_stop).expect("submit"), 1).remove(0);
    assert_eq!(cut.text, base.text[..base.text.find(&stop).expect("stop")]);
    assert_eq!(cut.finish, Some(FinishReason::Stop));
    wait_for(&h, "the stopped choice freed", |m| {
        m.running_sequences == 0 && m.requests_with(RequestStatus::Completed) == 2
    });
    let m = h.metrics();
    assert!(
        m.generated_tokens < 16 + 100,
        "the engine ran on for {} tokens after the stop",
        m.generated_tokens - 16
    );
    assert_eq!(m.kv_bytes_used, 0);
    h.shutdown();
}

#[test]
fn a_cached_prefix_changes_no_text_and_is_reported() {
    let p = prompt(60, 53); // 3 full blocks and 5 tokens
    let mut q = p[..40].to_vec(); // shares 2 full blocks
    q.extend(prompt(61, 9));
    let cold = start(config(4));
    let (want_q, cached) = collect_cached(cold.submit(greedy(q.clone(), 12)).expect("q"), 1);
    assert_eq!(cached, 0);
    cold.shutdown();

    let h = start(config(4));
    let (first, cached) = collect_cached(h.submit(greedy(p.clone(), 12)).expect("p"), 1);
    assert_eq!(cached, 0);
    let (again, cached) = collect_cached(h.submit(greedy(p.clone(), 12)).expect("p"), 1);
    assert_eq!((again, cached), (first.clone(), 48));
    let (got_q, cached) = collect_cached(h.submit(greedy(q.clone(), 12)).expect("q"), 1);
    assert_eq!((got_q, cached), (want_q, 32));
    // Forks of a cached prompt: each choice as the prompt alone.
    let mut two = greedy(p.clone(), 12);
    two.n = 2;
    let (outs, cached) = collect_cached(h.submit(two).expect("fork"), 2);
    assert_eq!(cached, 48);
    assert!(outs.iter().all(|o| *o == first[0]));
    wait_for(&h, "all done", |m| m.running_sequences == 0);
    let m = h.metrics();
    assert_eq!(m.prefix_cache_hits, 48 + 32 + 48);
    assert_eq!(m.prefix_cache_queries, 3 * 52 + (q.len() as u64 - 1));
    assert!(h.kv_stats().blocks_cached >= 3);
    assert_eq!(m.kv_bytes_used, 0);
    h.shutdown();
}

#[test]
fn a_prefix_held_by_a_running_request_is_shared() {
    let p = prompt(70, 50);
    let mut q = p[..48].to_vec();
    q.extend(prompt(71, 6));
    let h = start(config(4));
    let alone_p = collect(h.submit(greedy(p.clone(), 30)).expect("p"), 1);
    h.shutdown();
    let h = start(config(4));
    let alone_q = collect(h.submit(greedy(q.clone(), 10)).expect("q"), 1);
    h.shutdown();

    let h = start(config(4));
    let running = h.submit(greedy(p.clone(), 30)).expect("p");
    wait_for(&h, "p decodes", |m| m.generated_tokens > 0);
    let (shared, cached) = collect_cached(h.submit(greedy(q, 10)).expect("q"), 1);
    assert_eq!((shared, cached), (alone_q, 48));
    assert_eq!(collect(running, 1), alone_p);
    // p alone holds ceil(80 / 16) = 5 blocks, q alone 4: together they share 3.
    let kv = h.kv_stats();
    assert!(kv.peak_blocks_used <= 5 + 1, "{kv:?}");
    h.shutdown();
}

#[test]
fn eviction_under_pressure_spares_the_blocks_in_use() {
    // 6 blocks: two requests sharing a 3-block prefix fit only by evicting idle blocks and
    // preempting; neither may lose a block it holds.
    let base = prompt(80, 50);
    let reqs: Vec<Request> = (0..3)
        .map(|i| {
            let mut p = base[..48].to_vec();
            p.extend(prompt(81 + i, 2));
            greedy(p, 30)
        })
        .collect();
    let budget = KvBudget::Tokens(6 * KV_BLOCK_SIZE);
    let alone: Vec<Vec<super::tests::Out>> = reqs
        .iter()
        .map(|r| {
            let h = start_kv(config(4), budget);
            let out = collect(h.submit(r.clone()).expect("alone"), 1);
            h.shutdown();
            out
        })
        .collect();
    let h = start_kv(config(4), budget);
    // An unrelated prompt fills the idle list first.
    collect(h.submit(greedy(prompt(90, 60), 4)).expect("filler"), 1);
    wait_for(&h, "the filler done", |m| m.running_sequences == 0);
    assert_eq!(h.kv_stats().blocks_cached, 3);
    let rxs: Vec<EventReceiver> = reqs
        .iter()
        .map(|r| h.submit(r.clone()).expect("submit"))
        .collect();
    for (rx, want) in rxs.into_iter().zip(&alone) {
        assert_eq!(&collect(rx, 1), want);
    }
    wait_for(&h, "all done", |m| m.running_sequences == 0);
    let kv = h.kv_stats();
    assert!(kv.preemptions > 0, "{kv:?}");
    assert_eq!((kv.blocks_used, kv.blocks_free), (0, 6));
    h.shutdown();
}
