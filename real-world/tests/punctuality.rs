//! The measure of the real world's own punctuality: the steal time read from `/proc/stat`, and
//! the gaps between a loop's looks.

use std::time::{Duration, Instant};

use real_world::{
    Finding, Punctuality,
    punctuality::{GapMeter, disturbed, steal_ms_of},
};

#[test]
fn steal_is_the_eighth_number_of_the_cpu_line() {
    let stat = "cpu  2896719 117092 879660 227391 4932 0 3368 134048 0 0\n\
                cpu0 1 2 3 4 5 6 7 8 0 0\n";
    assert_eq!(steal_ms_of(stat), Some(1_340_480));
    assert_eq!(steal_ms_of("intr 1 2 3\n"), None);
}

#[test]
fn a_gap_is_measured_between_looks_and_not_across_a_restart() {
    let start = Instant::now();
    let mut meter = GapMeter::default();
    meter.look(start);
    meter.look(start + Duration::from_millis(3));
    meter.restart();
    meter.look(start + Duration::from_millis(500));
    meter.look(start + Duration::from_millis(501));
    assert_eq!(meter.longest_ms(), 3);
}

#[test]
fn only_time_findings_from_a_late_machine_are_disturbed() {
    let tolerance = 25;
    let punctual = Punctuality {
        step_late_ms: 0,
        poll_gap_ms: 1,
        links_gap_ms: 1,
        steal_ms: 0,
    };
    let stalled = Punctuality {
        links_gap_ms: 13,
        ..punctual
    };
    let late = Finding::time("flow end at 5040 ms, the model says 5000 ms");
    let differs = Finding::content("flow record differs");
    assert_eq!(disturbed(&[], 0, &stalled, tolerance), None, "no findings");
    assert_eq!(
        disturbed(std::slice::from_ref(&late), 40, &punctual, tolerance),
        None,
        "a punctual machine's drift stands"
    );
    assert_eq!(
        disturbed(&[late.clone(), differs], 40, &stalled, tolerance),
        None,
        "a difference in what happened stands, whatever the machine did"
    );
    let why = disturbed(&[late], 40, &stalled, tolerance).expect("disturbed");
    assert!(why.contains("ran up to 13 ms late"), "{why}");
    let just_under = Punctuality {
        links_gap_ms: 12,
        ..punctual
    };
    let late = Finding::time("late");
    assert_eq!(
        disturbed(&[late], 40, &just_under, tolerance),
        None,
        "less than half the tolerance late"
    );
}
