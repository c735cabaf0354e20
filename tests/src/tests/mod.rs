//! The test registry, one module per fault program or concern.
//!
//! A new test is one line in `register!` below: its path. The name
//! (`file::case`; `safety::case::family` for the safety suite that
//! every family runs: see `safety.rs`; `containers::case::runtime` for a
//! case run on each container runtime; `io_error::fmod_ret::case` for
//! io-error's tests through its second mechanism) comes from that path; the order is the run order (the
//! doctor guard first: it checks that every capability expected on this
//! kernel is present, so that no test is skipped for a capability that
//! should have been there).

mod cli;
pub mod clock_skew;
mod containers;
mod cpu_starve;
mod demo;
pub mod dns_error;
mod doctor;
mod experiment;
pub mod io_error;
mod io_throttle;
mod kill;
mod kube;
mod kube_controller;
mod kube_daemonset;
mod memory_pressure;
mod net_burst;
pub mod net_corrupt;
pub mod net_delay;
mod net_duplicate;
mod net_loss;
mod net_partition;
mod net_qdisc;
mod net_rate;
pub mod net_receive;
pub mod net_refuse;
mod net_refuse_incoming;
mod net_reset;
mod net_tag;
mod pause;
mod probes;
mod safety;
mod torture;

crate::harness::register! {
    doctor::matches_expected_capabilities,
    doctor::leaves_nothing_behind,
    doctor::leftover_probe_cgroups_change_nothing,
    doctor::recover_removes_a_killed_probes_cgroup,
    cli::bad_input_is_refused_with_nothing_attached,
    cli::not_root_is_refused,
    cli::output_paths_are_not_followed,
    cli::second_attack_on_same_target_is_refused,
    cli::simultaneous_attacks_on_one_target_have_one_winner,
    cli::a_dead_run_with_our_pid_is_recovered_not_overwritten,
    net_loss::egress_rates_are_exact_and_silent,
    net_loss::ingress_rates_are_exact,
    net_loss::sibling_cgroup_loses_nothing,
    net_loss::cidr_and_port_filters,
    net_loss::ping_reports_the_loss,
    net_loss::tcp_recovers_by_retransmission,
    net_loss::netlink_kill9_fault_ends_then_recover,
    net_burst::bursts_follow_the_gilbert_model,
    net_burst::bursts_match_netem_gemodel,
    net_partition::bad_flags_are_refused,
    net_partition::cuts_both_ways_and_heals,
    net_reset::bad_flags_are_refused,
    net_reset::resets_both_ends_of_matching_connections,
    net_reset::resets_the_configured_share,
    net_reset::resets_every_interval_until_the_deadline,
    net_reset::ends_with_a_killed_or_hung_loader,
    net_reset::real_clients_see_the_reset,
    pause::freezes_in_cycles_and_spares_the_sibling,
    pause::killed_chaos_or_guardian_thaws_at_once,
    pause::a_hung_chaos_is_thawed_at_the_deadline,
    pause::trips_an_http_hypothesis_and_rolls_back,
    pause::refusals_leave_everything_as_it_was,
    cpu_starve::limits_the_target_and_spares_the_sibling,
    cpu_starve::every_ending_restores_the_limit,
    cpu_starve::refusals_leave_everything_as_it_was,
    kill::kills_everything_and_reports_the_restart,
    kill::picks_the_main_process_or_a_name,
    kill::kills_again_every_interval,
    kill::follows_its_cgroup_made_again,
    kill::a_hung_chaos_kills_nothing_after_the_deadline,
    kill::refusals_leave_everything_as_it_was,
    memory_pressure::slows_the_target_and_spares_the_sibling,
    memory_pressure::every_ending_restores_the_boundary,
    memory_pressure::refusals_leave_everything_as_it_was,
    io_throttle::holds_direct_io_to_the_limits_and_spares_the_sibling,
    io_throttle::a_path_on_a_partition_throttles_its_disk,
    io_throttle::every_ending_restores_the_limits,
    io_throttle::refusals_leave_everything_as_it_was,
    net_delay::bad_input_is_refused,
    net_delay::delay_and_jitter_hold_their_distribution,
    net_receive::delay_holds_its_distribution,
    net_delay::delay_combines_with_loss,
    net_delay::reorder_rate_is_exact,
    net_rate::throughput_matches_at_10_and_100_mbit,
    net_duplicate::duplicate_rate_is_exact,
    net_corrupt::corrupt_rate_is_exact_and_receivers_drop_them,
    net_receive::duplicates_what_the_target_receives,
    net_receive::corrupted_replies_fail_the_targets_ip_checks,
    net_receive::rate_limits_what_the_target_receives,
    net_receive::reorders_and_loses_what_the_target_receives,
    net_receive::refused_where_the_kernel_cannot,
    net_receive::kill9_and_hung_loader_leave_nothing,
    net_tag::mark_never_leaves_the_classifier,
    net_refuse::bad_flags_are_refused,
    net_refuse::connects_fail_with_the_errno_at_the_rate,
    net_refuse::real_clients_see_connection_refused,
    net_refuse::filters_pick_destination_port_protocol_and_family,
    net_refuse_incoming::refuses_connections_to_the_targets_listeners,
    net_refuse_incoming::refuses_the_configured_share_from_chosen_clients,
    net_refuse_incoming::real_clients_see_connection_refused,
    net_refuse_incoming::refused_without_an_exact_listener,
    dns_error::bad_flags_are_refused,
    dns_error::answers_matching_names_with_the_rcode,
    dns_error::real_resolvers_see_the_error,
    dns_error::fails_the_configured_share_and_times_out,
    dns_error::acts_on_lookups_over_tcp,
    net_qdisc::restored_on_every_ending,
    net_qdisc::foreign_qdiscs_are_refused_or_reused,
    net_qdisc::bystander_loses_nothing_when_an_attack_ends,
    net_qdisc::multiqueue_gets_mq_with_fq_per_queue,
    net_qdisc::recover_leaves_a_replaced_qdisc_and_closes_the_record,
    experiment::validate_reports_positions,
    experiment::dry_run_plans_and_injects_nothing,
    experiment::hypothesis_holds_exit_0_with_junit,
    experiment::attack_is_a_one_step_experiment,
    experiment::violated_hypothesis_aborts_within_50ms,
    experiment::failed_steady_state_injects_nothing,
    experiment::abort_condition_and_signal_exit_2,
    experiment::kill9_mid_experiment_tcx,
    experiment::kill9_mid_experiment_netlink_then_recover,
    io_error::unavailable_says_why,
    io_error::bad_flags_are_refused,
    io_error::bad_paths_are_refused,
    io_error::sqlite_reports_the_injected_error,
    io_error::error_rates_match_the_probability,
    io_error::every_errno_reaches_the_caller,
    io_error::paths_match_what_the_kernel_resolves,
    io_error::paths_are_looked_up_in_the_target_root,
    io_error::operations_are_filtered,
    io_error::first_and_after_windows,
    io_error::walk_depth_is_bounded,
    io_error::fmod_ret::sqlite_reports_the_injected_error,
    io_error::fmod_ret::every_errno_reaches_the_caller,
    io_error::fmod_ret::paths_match_what_the_kernel_resolves,
    io_error::fmod_ret::operations_are_filtered,
    io_error::fmod_ret::walk_depth_is_bounded,
    clock_skew::unavailable_says_why,
    clock_skew::bad_input_is_refused,
    clock_skew::tools_in_the_target_read_the_offset,
    clock_skew::tracepoint_fallback_reads_the_offset,
    clock_skew::running_processes_read_the_offset_through_libc,
    clock_skew::openssl_verify_expires_only_in_the_target,
    clock_skew::experiment_step_skews_the_target,
    containers::net_loss_by_name::podman,
    containers::net_loss_by_name::docker,
    containers::net_loss_by_name::containerd,
    containers::targets_lists_what_runs_and_bad_names_are_refused,
    containers::io_error_and_clock_skew_by_name,
    containers::kill_follows_a_docker_restart,
    kube::agent_runs_chaos_attacks_from_a_stand_in_api,
    kube_daemonset::agent_pod_with_the_daemonsets_security_context,
    kube_daemonset::memlock_before_5_11_refused_then_granted,
    kube_controller::runner_verdicts_refusals_and_takeover_stand_in_api,
    kube_controller::runner_and_agent_on_a_cri_pod_stand_in_api,
    containers::pod_covers_its_containers_even_restarted,
    containers::cri_o_containers_by_name_through_a_stand_in,
    demo::falls_back_to_a_process_without_a_container_runtime,
    demo::runs_its_service_in_a_container,
    safety::ends_at_deadline::net_loss,
    safety::ends_at_deadline::io_error,
    safety::ends_at_deadline::io_error_fmod_ret,
    safety::ends_at_deadline::clock_skew,
    safety::ends_at_deadline::net_refuse,
    safety::ends_at_deadline::net_refuse_incoming,
    safety::ends_at_deadline::dns_error,
    safety::ends_on_sigint::net_loss,
    safety::ends_on_sigint::io_error,
    safety::ends_on_sigint::io_error_fmod_ret,
    safety::ends_on_sigint::clock_skew,
    safety::ends_on_sigint::net_refuse,
    safety::ends_on_sigint::net_refuse_incoming,
    safety::ends_on_sigint::dns_error,
    safety::ends_on_sigterm::net_loss,
    safety::ends_on_sigterm::io_error,
    safety::ends_on_sigterm::io_error_fmod_ret,
    safety::ends_on_sigterm::clock_skew,
    safety::ends_on_sigterm::net_refuse,
    safety::ends_on_sigterm::net_refuse_incoming,
    safety::ends_on_sigterm::dns_error,
    safety::kill9_links_vanish_with_the_loader::net_loss,
    safety::kill9_links_vanish_with_the_loader::io_error,
    safety::kill9_links_vanish_with_the_loader::io_error_fmod_ret,
    safety::kill9_links_vanish_with_the_loader::clock_skew,
    safety::kill9_links_vanish_with_the_loader::net_refuse,
    safety::kill9_links_vanish_with_the_loader::net_refuse_incoming,
    safety::kill9_links_vanish_with_the_loader::dns_error,
    safety::hung_loader_kernel_deadline_ends_fault::net_loss,
    safety::hung_loader_kernel_deadline_ends_fault::io_error,
    safety::hung_loader_kernel_deadline_ends_fault::io_error_fmod_ret,
    safety::hung_loader_kernel_deadline_ends_fault::clock_skew,
    safety::hung_loader_kernel_deadline_ends_fault::net_refuse,
    safety::hung_loader_kernel_deadline_ends_fault::net_refuse_incoming,
    safety::hung_loader_kernel_deadline_ends_fault::dns_error,
    probes::https_with_a_private_ca,
    probes::unanswered_dns_fails_within_the_timeout,
    probes::black_holed_address_fails_within_the_timeout,
    torture::kill_points_net_loss,
    torture::kill_points_net_loss_netlink,
    torture::kill_points_io_error,
    torture::kill_points_clock_skew,
}

#[cfg(test)]
mod registry {
    #[test]
    fn names_are_unique_and_name_their_module() {
        let mut seen = std::collections::BTreeSet::new();
        for t in super::ALL {
            assert!(seen.insert(t.name), "{} is registered twice", t.name);
            // `safety::case::family`, `containers::case::runtime` and
            // `file::mechanism::case` (the same tests through a forced
            // mechanism, e.g. io_error::fmod_ret).
            let depth = if ["safety::", "io_error::fmod_ret::", "containers::net_loss_by_name::"]
                .iter()
                .any(|p| t.name.starts_with(p))
            {
                2
            } else {
                1
            };
            assert_eq!(t.name.matches("::").count(), depth, "{}", t.name);
        }
        assert_eq!(
            super::ALL[0].name,
            "doctor::matches_expected_capabilities",
            "the doctor guard runs first"
        );
    }
}
