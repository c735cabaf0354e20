//! The test registry, one module per fault program or concern.

mod cli;
pub mod clock_skew;
mod doctor;
mod experiment;
pub mod io_error;
mod lifecycle;
mod net_corrupt;
pub mod net_delay;
mod net_duplicate;
mod net_loss;
mod net_qdisc;
mod net_rate;
mod probes;
mod torture;

use crate::harness::Test;

pub const ALL: &[Test] = &[
    Test { name: "doctor::matches_expected_capabilities", run: doctor::matches_expected_capabilities },
    Test { name: "doctor::leaves_nothing_behind", run: doctor::leaves_nothing_behind },
    Test {
        name: "doctor::leftover_probe_cgroups_change_nothing",
        run: doctor::leftover_probe_cgroups_change_nothing,
    },
    Test {
        name: "cli::bad_input_is_refused_with_nothing_attached",
        run: cli::bad_input_is_refused_with_nothing_attached,
    },
    Test { name: "cli::not_root_is_refused", run: cli::not_root_is_refused },
    Test { name: "cli::output_paths_are_not_followed", run: cli::output_paths_are_not_followed },
    Test {
        name: "cli::second_attack_on_same_target_is_refused",
        run: cli::second_attack_on_same_target_is_refused,
    },
    Test {
        name: "cli::simultaneous_attacks_on_one_target_have_one_winner",
        run: cli::simultaneous_attacks_on_one_target_have_one_winner,
    },
    Test {
        name: "cli::a_dead_run_with_our_pid_is_recovered_not_overwritten",
        run: cli::a_dead_run_with_our_pid_is_recovered_not_overwritten,
    },
    Test {
        name: "net_loss::egress_rates_are_exact_and_silent",
        run: net_loss::egress_rates_are_exact_and_silent,
    },
    Test { name: "net_loss::ingress_rates_are_exact", run: net_loss::ingress_rates_are_exact },
    Test { name: "net_loss::sibling_cgroup_loses_nothing", run: net_loss::sibling_cgroup_loses_nothing },
    Test { name: "net_loss::cidr_and_port_filters", run: net_loss::cidr_and_port_filters },
    Test { name: "net_loss::ping_reports_the_loss", run: net_loss::ping_reports_the_loss },
    Test { name: "net_loss::tcp_recovers_by_retransmission", run: net_loss::tcp_recovers_by_retransmission },
    Test { name: "lifecycle::ends_at_deadline", run: lifecycle::ends_at_deadline },
    Test { name: "lifecycle::ends_on_sigint", run: lifecycle::ends_on_sigint },
    Test { name: "lifecycle::ends_on_sigterm", run: lifecycle::ends_on_sigterm },
    Test {
        name: "lifecycle::kill9_links_vanish_with_the_loader",
        run: lifecycle::kill9_links_vanish_with_the_loader,
    },
    Test {
        name: "lifecycle::hung_loader_kernel_deadline_ends_fault",
        run: lifecycle::hung_loader_kernel_deadline_ends_fault,
    },
    Test {
        name: "lifecycle::netlink_kill9_deadline_then_recover",
        run: lifecycle::netlink_kill9_deadline_then_recover,
    },
    Test { name: "net_delay::bad_input_is_refused", run: net_delay::bad_input_is_refused },
    Test {
        name: "net_delay::delay_and_jitter_hold_their_distribution",
        run: net_delay::delay_and_jitter_hold_their_distribution,
    },
    Test { name: "net_delay::delay_combines_with_loss", run: net_delay::delay_combines_with_loss },
    Test { name: "net_delay::reorder_rate_is_exact", run: net_delay::reorder_rate_is_exact },
    Test {
        name: "net_rate::throughput_matches_at_10_and_100_mbit",
        run: net_rate::throughput_matches_at_10_and_100_mbit,
    },
    Test { name: "net_duplicate::duplicate_rate_is_exact", run: net_duplicate::duplicate_rate_is_exact },
    Test {
        name: "net_corrupt::corrupt_rate_is_exact_and_receivers_drop_them",
        run: net_corrupt::corrupt_rate_is_exact_and_receivers_drop_them,
    },
    Test { name: "net_qdisc::restored_on_every_ending", run: net_qdisc::restored_on_every_ending },
    Test {
        name: "net_qdisc::foreign_qdiscs_are_refused_or_reused",
        run: net_qdisc::foreign_qdiscs_are_refused_or_reused,
    },
    Test {
        name: "net_qdisc::bystander_loses_nothing_when_an_attack_ends",
        run: net_qdisc::bystander_loses_nothing_when_an_attack_ends,
    },
    Test {
        name: "net_qdisc::multiqueue_gets_mq_with_fq_per_queue",
        run: net_qdisc::multiqueue_gets_mq_with_fq_per_queue,
    },
    Test {
        name: "net_qdisc::recover_leaves_a_replaced_qdisc_and_closes_the_record",
        run: net_qdisc::recover_leaves_a_replaced_qdisc_and_closes_the_record,
    },
    Test { name: "experiment::validate_reports_positions", run: experiment::validate_reports_positions },
    Test {
        name: "experiment::dry_run_plans_and_injects_nothing",
        run: experiment::dry_run_plans_and_injects_nothing,
    },
    Test {
        name: "experiment::hypothesis_holds_exit_0_with_junit",
        run: experiment::hypothesis_holds_exit_0_with_junit,
    },
    Test {
        name: "experiment::violated_hypothesis_aborts_within_50ms",
        run: experiment::violated_hypothesis_aborts_within_50ms,
    },
    Test {
        name: "experiment::failed_steady_state_injects_nothing",
        run: experiment::failed_steady_state_injects_nothing,
    },
    Test {
        name: "experiment::abort_condition_and_signal_exit_2",
        run: experiment::abort_condition_and_signal_exit_2,
    },
    Test { name: "experiment::kill9_mid_experiment_tcx", run: experiment::kill9_mid_experiment_tcx },
    Test {
        name: "experiment::kill9_mid_experiment_netlink_then_recover",
        run: experiment::kill9_mid_experiment_netlink_then_recover,
    },
    Test { name: "io_error::unavailable_says_why", run: io_error::unavailable_says_why },
    Test { name: "io_error::bad_flags_are_refused", run: io_error::bad_flags_are_refused },
    Test { name: "io_error::bad_paths_are_refused", run: io_error::bad_paths_are_refused },
    Test {
        name: "io_error::sqlite_reports_the_injected_error",
        run: io_error::sqlite_reports_the_injected_error,
    },
    Test {
        name: "io_error::error_rates_match_the_probability",
        run: io_error::error_rates_match_the_probability,
    },
    Test { name: "io_error::every_errno_reaches_the_caller", run: io_error::every_errno_reaches_the_caller },
    Test {
        name: "io_error::paths_match_what_the_kernel_resolves",
        run: io_error::paths_match_what_the_kernel_resolves,
    },
    Test {
        name: "io_error::paths_are_looked_up_in_the_target_root",
        run: io_error::paths_are_looked_up_in_the_target_root,
    },
    Test { name: "io_error::operations_are_filtered", run: io_error::operations_are_filtered },
    Test { name: "io_error::first_and_after_windows", run: io_error::first_and_after_windows },
    Test { name: "io_error::ends_at_deadline", run: io_error::ends_at_deadline },
    Test { name: "io_error::ends_on_sigint", run: io_error::ends_on_sigint },
    Test { name: "io_error::ends_on_sigterm", run: io_error::ends_on_sigterm },
    Test {
        name: "io_error::kill9_links_vanish_with_the_loader",
        run: io_error::kill9_links_vanish_with_the_loader,
    },
    Test {
        name: "io_error::hung_loader_kernel_deadline_ends_fault",
        run: io_error::hung_loader_kernel_deadline_ends_fault,
    },
    Test { name: "clock_skew::unavailable_says_why", run: clock_skew::unavailable_says_why },
    Test { name: "clock_skew::bad_input_is_refused", run: clock_skew::bad_input_is_refused },
    Test {
        name: "clock_skew::tools_in_the_target_read_the_offset",
        run: clock_skew::tools_in_the_target_read_the_offset,
    },
    Test {
        name: "clock_skew::tracepoint_fallback_reads_the_offset",
        run: clock_skew::tracepoint_fallback_reads_the_offset,
    },
    Test {
        name: "clock_skew::running_processes_read_the_offset_through_libc",
        run: clock_skew::running_processes_read_the_offset_through_libc,
    },
    Test {
        name: "clock_skew::openssl_verify_expires_only_in_the_target",
        run: clock_skew::openssl_verify_expires_only_in_the_target,
    },
    Test {
        name: "clock_skew::experiment_step_skews_the_target",
        run: clock_skew::experiment_step_skews_the_target,
    },
    Test { name: "clock_skew::ends_at_deadline", run: clock_skew::ends_at_deadline },
    Test { name: "clock_skew::ends_on_sigint", run: clock_skew::ends_on_sigint },
    Test { name: "clock_skew::ends_on_sigterm", run: clock_skew::ends_on_sigterm },
    Test {
        name: "clock_skew::kill9_links_vanish_with_the_loader",
        run: clock_skew::kill9_links_vanish_with_the_loader,
    },
    Test {
        name: "clock_skew::hung_loader_kernel_deadline_ends_fault",
        run: clock_skew::hung_loader_kernel_deadline_ends_fault,
    },
    Test { name: "torture::kill_points_net_loss", run: torture::kill_points_net_loss },
    Test { name: "torture::kill_points_net_loss_netlink", run: torture::kill_points_net_loss_netlink },
    Test { name: "torture::kill_points_io_error", run: torture::kill_points_io_error },
    Test { name: "torture::kill_points_clock_skew", run: torture::kill_points_clock_skew },
    Test { name: "probes::https_with_a_private_ca", run: probes::https_with_a_private_ca },
    Test {
        name: "probes::unanswered_dns_fails_within_the_timeout",
        run: probes::unanswered_dns_fails_within_the_timeout,
    },
    Test {
        name: "probes::black_holed_address_fails_within_the_timeout",
        run: probes::black_holed_address_fails_within_the_timeout,
    },
];
