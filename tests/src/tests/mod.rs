//! The test registry, one module per fault program or concern.

mod cli;
mod doctor;
mod lifecycle;
mod net_loss;

use crate::harness::Test;

pub const ALL: &[Test] = &[
    Test { name: "doctor::matches_expected_capabilities", run: doctor::matches_expected_capabilities },
    Test { name: "doctor::leaves_nothing_behind", run: doctor::leaves_nothing_behind },
    Test {
        name: "cli::bad_input_is_refused_with_nothing_attached",
        run: cli::bad_input_is_refused_with_nothing_attached,
    },
    Test { name: "cli::not_root_is_refused", run: cli::not_root_is_refused },
    Test {
        name: "cli::second_attack_on_same_target_is_refused",
        run: cli::second_attack_on_same_target_is_refused,
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
];
