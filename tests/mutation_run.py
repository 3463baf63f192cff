"""``make mutation``: cosmic-ray's mutants of every module of loihi/ and sim/, each against
a fast, targeted test selection; outside CI.

Cosmic-ray writes each mutant into the module file itself, so the run mutates a private
copy of the tree (``runs/mutation/tree``) that imports ``lrfdyn`` from itself, ahead of
the editable install: a killed run never leaves a mutated module in the working tree.

For each module it builds cosmic-ray's work list (a reduced operator set: one swap per
arithmetic operator, boundary swaps of comparisons, numbers, booleans, and/or, unary
signs, break/continue, zero-iteration loops), checks that the selection passes on the
unmutated copy, then runs a seeded random sample of the mutants within a time budget,
shared between modules. Results go to ``runs/mutation/<dir>.<module>.sqlite`` (e.g.
``loihi.lower.sqlite``; ``cr-report`` reads them) and a summary to
``runs/mutation/summary.json`` and ``summary.md``. A module's sample depends on the seed and
the module only, not on which other modules ``--only`` names.

    python tests/mutation_run.py [--minutes 45] [--per-module N] [--only lower,report]
                                 [--selection unit|broad] [--seed S]

Every module of ``loihi/`` (``loihi/processes/`` included) and ``sim/`` has an entry in
:data:`TARGETS` and :data:`UNITS` (only ``loihi/__init__.py`` and ``sim/__init__.py``, which
hold a docstring and nothing else, are left out), and a run without ``--only`` covers all
of them. ``--only`` takes stems, paths or dotted
names (:func:`chosen`): ``--only sim/dendritic.py,loihi/processes/conv,ir``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Node-id prefixes of the test files the selections below draw from.
_INTEROP = "tests/sim/test_interop.py::"
_MEMORY = "tests/sim/test_memory.py::"
_DENDRITIC = "tests/sim/test_dendritic.py::"
_SHARD = "tests/sim/test_shard.py::"
_SIMULATE = "tests/sim/test_simulate.py::"
_COPIES = "tests/loihi/test_copies.py::"
_BUILD = "tests/loihi/test_build_units.py::"
_RESOURCES = "tests/loihi/test_resources.py::"
_NETX = "tests/loihi/test_netx.py::"
_PROFILE = "tests/sim/test_profile.py::"

#: The lowering's own unit tests (ir, wiring, quantize, schedule, lower).
_LOWERING = ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"]
#: test_interop's tests that run no Lava and need no trained model.
_INTEROP_UNITS = [
    _INTEROP + "test_the_graphs_hold_every_primitive_a_loop_and_a_subgraph",
    _INTEROP + "test_unsupported_nodes_are_listed_all_at_once",
    _INTEROP + "test_a_loop_through_two_groups_is_refused",
    _INTEROP + "test_fixed_input_must_be_integers_and_shapes_must_fit",
    _INTEROP + "test_input_shapes_as_users_hold_them_for_a_single_channel_image",
    _INTEROP + "test_time_constants_absurd_for_dt_are_named_with_the_options",
    _INTEROP + "test_every_offending_node_is_named_in_one_refusal",
    _INTEROP + "test_per_neuron_time_constants_in_a_recurrent_layer_are_refused_for_fixed_only",
    _INTEROP + "test_rockpool_io_types_and_dt_are_recovered",
    _INTEROP + "test_a_file_with_batch_axes_in_its_io_types_is_read",
]
#: test_interop's short Lava runs (seconds each; its ``runs`` fixture takes far longer).
_INTEROP_LAVA = [
    _INTEROP + "test_a_run_that_never_spikes_is_flagged_with_the_assumed_dt",
    _INTEROP + "test_per_neuron_parameters_float_exact_and_fixed_as_uniform_subpopulations",
]
#: test_dendritic's tests without a Lava run.
_DENDRITIC_UNITS = [
    _DENDRITIC + "test_stream_structure",
    _DENDRITIC + "test_z_follows_the_float_model",
    _DENDRITIC + "test_chained_and_batched_streams_agree_on_every_token",
    _DENDRITIC + "test_reference_input_hook_reproduces_the_synapses",
    _DENDRITIC + "test_hybrid_run_records_the_streams",
    _DENDRITIC + "test_graph_without_dendrite_is_refused",
    _DENDRITIC + "test_graded_overflow_is_caught_before_lava",
    _DENDRITIC + "test_cli_refuses_a_graph_without_dendrite_in_one_line",
]
#: test_resources's tests that need no trained model.
_RESOURCES_UNITS = [
    _RESOURCES + "test_cores_follow_from_neuron_count_and_synaptic_memory",
    _RESOURCES + "test_a_network_too_large_for_one_chip_says_so",
    _RESOURCES + "test_a_neuron_whose_fan_in_exceeds_a_core_is_reported",
    _RESOURCES + "test_limits_are_validated_and_cite_their_sources",
    _RESOURCES + "test_a_conv_stores_its_kernel_once_however_many_positions_while_it_fits_a_core",
    _RESOURCES + "test_a_conv_split_over_cores_stores_the_filters_each_core_uses",
    _RESOURCES + "test_a_depthwise_kernel_is_stored_per_channel_on_the_cores_holding_it",
    _RESOURCES + "test_memory_sets_a_conv_layers_cores_from_its_fullest_core",
    _RESOURCES + "test_sparse_layers_are_split_by_target_rows",
    _RESOURCES + "test_relays_are_neurons_with_one_24_bit_state_value",
    _RESOURCES + "test_a_network_bigger_than_a_chip_is_partitioned_in_network_order",
    _RESOURCES + "test_the_chip_neuron_limit_splits_a_layer_before_its_cores_run_out",
    _RESOURCES + "test_the_mapping_serialises_with_per_layer_cores_and_chips",
    _RESOURCES + "test_the_summary_of_many_layers_stays_short",
]

#: module -> the integration tests that also reach it (``--selection broad``, after
#: :data:`UNITS`): Lava runs, a few of them on the small trained digits model.
TARGETS: dict[str, list[str]] = {
    "loihi/lower.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/ir.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/wiring.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/quantize.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/schedule.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/neurons.py": [
        "tests/test_mutants.py::test_norse_cuba_lif_ignores_w_in_and_nir_applies_it",
        "tests/sim/test_nir_sim.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
    ],
    "loihi/build.py": [
        "tests/test_mutants.py",
        "tests/sim/test_simulate.py::test_shortcut_delay_and_bias_are_spike_exact",
        "tests/sim/test_simulate.py::test_reset_between_samples_equals_a_fresh_network",
        "tests/sim/test_simulate.py::test_networks_that_cannot_drain_are_reset_and_stay_exact",
    ],
    "sim/reference.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
        "tests/sim/test_simulate.py::test_shortcut_delay_and_bias_are_spike_exact",
    ],
    "sim/report.py": [
        "tests/test_mutants.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
        "tests/sim/test_simulate.py::test_a_real_disagreement_is_named_by_layer_sample_step_neuron",
        "tests/sim/test_profile.py::test_synops_macs_and_memory_equal_a_hand_count",
    ],
    "sim/streams.py": [
        "tests/sim/test_dendritic.py",
        "tests/sim/test_dendritic_network.py::test_reference_matches_the_hybrid_reference",
    ],
    "sim/dendritic_report.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic.py",
    ],
    "sim/dendritic_network.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic_network.py",
    ],
    "sim/dendritic.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic.py",
    ],
    "sim/memory_closed_form.py": [
        "tests/sim/test_memory.py",
    ],
    "sim/memory_measured.py": [
        "tests/sim/test_memory.py",
    ],
    "sim/memory.py": [
        "tests/sim/test_memory.py",
    ],
    # ---- the rest of loihi/ and sim/: Lava integration tests after the units
    "loihi/compat.py": ["tests/loihi/test_compat.py"],
    "loihi/copies.py": [
        _COPIES + "test_copies_on_lava_equal_single_runs_with_convs_biases_and_delays",
        _COPIES + "test_stream_copies_equal_one_stream_network_per_sample",
    ],
    "loihi/dendritic.py": [_DENDRITIC + "test_lava_streams_are_bit_exact"],
    "loihi/dendritic_network.py": [_MEMORY + "test_profile_memory_cli"],
    "loihi/fine.py": [
        _INTEROP + "test_fixed_lava_equals_the_integer_reference_and_reports_agreement",
    ],
    "loihi/fixed.py": ["tests/sim/test_simulate.py::test_shortcut_delay_and_bias_are_spike_exact"],
    "loihi/float_lower.py": [
        _INTEROP + "test_float_lava_equals_the_nir_semantics_everywhere",
        "tests/loihi/test_against_float.py::"
        "test_mlp_weights_are_the_float_weights_in_threshold_units",
    ],
    "loihi/graph.py": [*_INTEROP_UNITS],
    "loihi/hardware.py": [
        _RESOURCES + "test_deploy_without_hardware_fails_in_one_line_within_a_second",
    ],
    "loihi/layers.py": [
        "tests/loihi/test_conv_model.py::test_connect_conv_maps_flat_torch_order_groups",
        _INTEROP + "test_a_cnn_whose_pooling_is_a_relay_runs_in_both_modes",
    ],
    "loihi/linear.py": [_INTEROP + "test_float_lava_equals_the_nir_semantics_everywhere"],
    "loihi/netx.py": ["tests/loihi/test_netx.py"],
    "loihi/processes/clocked.py": ["tests/sim/test_dendritic_network.py"],
    "loihi/processes/compartment.py": [
        _COPIES + "test_stream_copies_equal_one_stream_network_per_sample",
    ],
    "loihi/processes/__init__.py": ["tests/loihi/test_conv_model.py"],
    "loihi/processes/conv.py": [
        "tests/loihi/test_fixed.py::test_conv_matches_lava",
        _INTEROP + "test_fixed_lava_equals_the_integer_reference_and_reports_agreement",
    ],
    "loihi/processes/nir_neuron.py": [
        _INTEROP + "test_float_lava_equals_the_nir_semantics_everywhere",
        _INTEROP + "test_fine_weights_and_calibration_raise_fixed_agreement_of_a_voltage_readout",
    ],
    "loihi/processes/recorder.py": [
        _SIMULATE + "test_reset_between_samples_equals_a_fresh_network",
        "tests/loihi/test_conv_model.py",
    ],
    "loihi/processes/sparse.py": [
        _COPIES + "test_copies_on_lava_equal_single_runs_with_convs_biases_and_delays",
    ],
    "loihi/resources.py": [
        _RESOURCES + "test_layer_memory_adds_up_to_memory_bits",
        _RESOURCES + "test_deploy_dry_run_prints_the_mapping",
    ],
    "sim/agreement.py": [
        _INTEROP + "test_fine_weights_and_calibration_raise_fixed_agreement_of_a_voltage_readout",
        _INTEROP + "test_fixed_lava_equals_the_integer_reference_and_reports_agreement",
    ],
    "sim/bits.py": [_MEMORY + "test_profile_memory_cli"],
    "sim/budget.py": [
        _SHARD + "test_a_run_over_the_memory_budget_runs_as_shards_that_fit_with_one_runs_report",
    ],
    "sim/energy.py": [_PROFILE + "test_energy_uses_the_stated_constants"],
    "sim/interop.py": [
        _INTEROP + "test_fine_weights_and_calibration_raise_fixed_agreement_of_a_voltage_readout",
        _INTEROP + "test_cli_runs_a_graph_on_an_array_and_writes_the_output",
        _INTEROP + "test_output_step_t_answers_input_step_t",
    ],
    "sim/lava_run.py": [
        _COPIES + "test_copies_on_lava_equal_single_runs_with_convs_biases_and_delays",
        _DENDRITIC + "test_lava_streams_are_bit_exact",
        "tests/sim/test_dendritic_network.py::test_clocked_lif_updates_once_per_period_on_lava",
    ],
    "sim/nir_input.py": [
        *_INTEROP_LAVA, _INTEROP + "test_cli_runs_a_graph_on_an_array_and_writes_the_output",
    ],
    "sim/nir_sim.py": [_INTEROP + "test_float_lava_equals_the_nir_semantics_everywhere"],
    "sim/per_neuron.py": [
        _INTEROP + "test_fixed_lava_equals_the_integer_reference_and_reports_agreement",
    ],
    "sim/plots.py": [_PROFILE + "test_profile_command_writes_beside_the_nir_file"],
    "sim/profile.py": ["tests/sim/test_profile.py"],
    "sim/shard.py": [
        _SHARD + "test_workers_report_equals_the_single_run",
        _SHARD + "test_a_failed_shard_is_named_by_its_sample_range_and_nothing_is_returned",
        _SHARD + "test_merging_in_process_shards_gives_the_single_report",
    ],
    "sim/simulate.py": [_SIMULATE + "test_mlp_is_spike_exact_on_lava"],
}

#: module -> its fast unit tests (the default ``--selection unit``): each mutant runs in
#: seconds, with no trained model, and Lava only for the modules that run only under Lava
#: (compat, the process models, lava_run) or build for it. ``--selection broad`` runs
#: :data:`TARGETS` after them.
UNITS: dict[str, list[str]] = {
    "loihi/lower.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/ir.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/wiring.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py",
                        "tests/loihi/test_wiring_units.py"],
    "loihi/quantize.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py",
                          "tests/loihi/test_quantize_units.py"],
    # test_layers runs a long delay's relays through the reference
    "loihi/schedule.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py",
                          "tests/loihi/test_schedule_units.py", "tests/loihi/test_layers.py"],
    "loihi/neurons.py": ["tests/loihi/test_neurons_units.py"],
    "loihi/build.py": ["tests/loihi/test_build_units.py"],
    "sim/reference.py": ["tests/sim/test_reference_units.py", "tests/test_mutants.py"],
    "sim/report.py": ["tests/sim/test_report_units.py", "tests/test_mutants.py"],
    "sim/streams.py": [
        "tests/sim/test_dendritic.py::test_z_follows_the_float_model",
        "tests/sim/test_dendritic.py::test_chained_and_batched_streams_agree_on_every_token",
        "tests/sim/test_dendritic.py::test_reference_input_hook_reproduces_the_synapses",
        "tests/sim/test_dendritic.py::test_hybrid_run_records_the_streams",
        "tests/sim/test_dendritic.py::test_graded_overflow_is_caught_before_lava",
    ],
    "sim/dendritic_report.py": [
        "tests/sim/test_shard.py::test_merging_dendritic_shards_gives_the_single_report",
        "tests/sim/test_shard.py::test_merging_one_network_shards_gives_the_single_report",
    ],
    "sim/dendritic_network.py": [
        "tests/sim/test_shard.py::test_merging_one_network_shards_gives_the_single_report",
        "tests/sim/test_dendritic_network.py::test_reference_matches_the_hybrid_reference",
    ],
    "sim/dendritic.py": [
        "tests/sim/test_shard.py::test_merging_dendritic_shards_gives_the_single_report",
        "tests/sim/test_dendritic.py::test_graph_without_dendrite_is_refused",
    ],
    "sim/memory_closed_form.py": [
        "tests/sim/test_memory.py::test_paper_scale_table",
        "tests/sim/test_memory.py::test_scale_is_read_from_the_graph",
    ],
    "sim/memory_measured.py": [
        "tests/sim/test_memory.py::test_model_equals_lowered_counts",
        "tests/sim/test_memory.py::test_model_equals_lowered_counts_at_medium_scale",
    ],
    "sim/memory.py": [
        "tests/sim/test_memory.py::test_profile_memory_cli",
    ],
    # ---- the rest of loihi/ and sim/. Lava appears only where the module runs only under
    # Lava (compat, the process models, lava_run) or is built for it (build, copies).
    "loihi/compat.py": ["tests/loihi/test_compat.py"],
    "loihi/copies.py": [
        "tests/loihi/test_copies_units.py",
        _COPIES + "test_stacking_and_splitting_are_inverse",
        _COPIES + "test_copies_equal_single_samples_in_the_integer_reference",
        _COPIES + "test_copy_count_follows_the_network_size",
        _COPIES + "test_a_silent_copy_stays_silent_on_lava_while_its_neighbours_spike",
    ],
    "loihi/dendritic.py": [
        *_DENDRITIC_UNITS,
        _MEMORY + "test_dendritic_state_is_k_d_compartments_plus_relays",
        _SHARD + "test_merging_dendritic_shards_gives_the_single_report",
        _BUILD + "test_stream_processes",
    ],
    "loihi/dendritic_network.py": [
        "tests/sim/test_dendritic_network.py",
        _SHARD + "test_merging_one_network_shards_gives_the_single_report",
    ],
    "loihi/fine.py": [
        _INTEROP + "test_split_weights_sum_to_the_rounded_targets_as_lava_computes_them",
        _INTEROP + "test_fine_weights_and_calibration_raise_fixed_agreement_of_a_voltage_readout",
    ],
    "loihi/fixed.py": ["tests/loihi/test_fixed.py", "tests/sim/test_reference_units.py"],
    "loihi/float_lower.py": [
        "tests/sim/test_budget.py::test_float_array_run_is_guarded",
        *_INTEROP_LAVA,
    ],
    "loihi/graph.py": ["tests/loihi/test_graph.py", "tests/sim/test_nir_sim.py"],
    "loihi/hardware.py": ["tests/loihi/test_hardware_units.py"],
    "loihi/layers.py": ["tests/loihi/test_layers.py", *_LOWERING, "tests/sim/test_nir_sim.py"],
    "loihi/linear.py": ["tests/loihi/test_layers.py", *_LOWERING, "tests/sim/test_nir_sim.py"],
    "loihi/netx.py": [
        _NETX + "test_write_netx_refuses_inner_weight_exponent",
        _NETX + "test_write_netx_refuses_shortcuts",
        _NETX + "test_netx_graded_input",
        _NETX + "test_netx_file_layout",
        _NETX + "test_netx_matches_lrfdyn_with_bias",
    ],
    "loihi/processes/clocked.py": [
        "tests/sim/test_dendritic_network.py::test_clocked_lif_updates_once_per_period_on_lava",
    ],
    "loihi/processes/compartment.py": [
        _BUILD + "test_stream_processes",
        _DENDRITIC + "test_lava_streams_are_bit_exact",
    ],
    # cpu_models picks the fast conv and sparse models: Lava's own conv gives zeros at 192
    # groups, and the sparse test compares the two.
    "loihi/processes/__init__.py": [
        "tests/loihi/test_processes_units.py",
        "tests/loihi/test_conv_model.py::"
        "test_depthwise_192_groups_work_where_lavas_own_conv_gives_zeros",
        "tests/loihi/test_sparse_models.py",
    ],
    "loihi/processes/conv.py": ["tests/loihi/test_conv_model.py"],
    "loihi/processes/nir_neuron.py": [
        _BUILD + "test_a_late_resetting_spiking_group_is_nir_lif",
        _BUILD + "test_neuron_processes",
        *_INTEROP_LAVA,
    ],
    "loihi/processes/recorder.py": [
        _BUILD + "test_block_and_recordings",
        _BUILD + "test_recordings_live_in_shared_memory_where_there_is_some",
        _SIMULATE + "test_shortcut_delay_and_bias_are_spike_exact",
    ],
    "loihi/processes/sparse.py": ["tests/loihi/test_sparse_models.py"],
    "loihi/resources.py": [*_RESOURCES_UNITS],
    "sim/agreement.py": ["tests/sim/test_agreement_units.py", *_INTEROP_LAVA],
    "sim/bits.py": [
        "tests/sim/test_bits_units.py",
        _MEMORY + "test_dendritic_state_is_k_d_compartments_plus_relays",
        _MEMORY + "test_paper_scale_table",
        _MEMORY + "test_lowered_count_equals_lava_processes",
    ],
    "sim/budget.py": ["tests/sim/test_budget.py"],
    "sim/energy.py": [_DENDRITIC + "test_cli_refuses_a_graph_without_dendrite_in_one_line"],
    "sim/interop.py": [*_INTEROP_UNITS, *_INTEROP_LAVA],
    "sim/lava_run.py": [
        _SIMULATE + "test_lava_failure_is_one_error_and_leaves_no_process",
        _SIMULATE + "test_a_real_disagreement_is_named_by_layer_sample_step_neuron",
        _SIMULATE + "test_reset_between_samples_equals_a_fresh_network",
        _COPIES + "test_a_silent_copy_stays_silent_on_lava_while_its_neighbours_spike",
    ],
    "sim/nir_input.py": ["tests/sim/test_nir_input_units.py", *_INTEROP_UNITS],
    "sim/nir_sim.py": ["tests/sim/test_nir_sim.py", "tests/test_mutants.py"],
    "sim/per_neuron.py": ["tests/sim/test_per_neuron_units.py", *_INTEROP_UNITS,
                          *_INTEROP_LAVA],
    "sim/plots.py": [_MEMORY + "test_profile_memory_cli"],
    "sim/profile.py": [
        _PROFILE + "test_synops_macs_and_memory_equal_a_hand_count",
        _MEMORY + "test_profile_memory_cli",
    ],
    "sim/shard.py": [
        _SHARD + "test_shard_ranges_cover_every_sample_once",
        _SHARD + "test_merging_dendritic_shards_gives_the_single_report",
        _SHARD + "test_merging_one_network_shards_gives_the_single_report",
        "tests/sim/test_budget.py::test_cli_max_memory_lowers_and_raises_the_budget",
    ],
    "sim/simulate.py": [
        "tests/sim/test_budget.py::test_cli_max_memory_lowers_and_raises_the_budget",
        _SIMULATE + "test_shortcut_delay_and_bias_are_spike_exact",
        _SIMULATE + "test_nodes_named_like_sources_are_groups_and_run_spike_exact",
    ],
}


def chosen(only: str | None) -> list[str]:
    """The modules ``--only`` names, in :data:`TARGETS` order (all of them without it).

    Each comma-separated name is a path (``sim/dendritic.py``), a path without ``.py``
    (``loihi/processes/conv``), a dotted name (``loihi.dendritic``) or a stem
    (``report``); a stem that two modules share (``dendritic``) names both. A name that
    matches no module is refused, so a typo never runs nothing.
    """
    if not only:
        return list(TARGETS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    forms = {m: {m, m[:-3], m[:-3].replace("/", "."), Path(m).stem} for m in TARGETS}
    unknown = [n for n in names if not any(n in f for f in forms.values())]
    if unknown:
        raise SystemExit(f"--only: no module {', '.join(unknown)}; the modules are "
                         f"{', '.join(TARGETS)}")
    return [m for m in TARGETS if any(n in forms[m] for n in names)]


def db_name(module: str) -> str:
    """The file stem of a module's cosmic-ray database: its dotted path, unique where
    stems are not (``loihi.dendritic``, ``sim.dendritic``)."""
    return module[:-3].replace("/", ".")


def selection(module: str, kind: str) -> list[str]:
    if kind == "unit":
        return UNITS[module]
    return [*UNITS[module], *(t for t in TARGETS[module] if t not in UNITS[module])]


def _digests() -> dict[str, str]:
    """sha256 of the working tree's mutated modules: proof that the run left them alone."""
    import hashlib

    return {m: hashlib.sha256((ROOT / m).read_bytes()).hexdigest() for m in TARGETS}


#: Operators kept (regexes on cosmic-ray's names); the rest multiply the mutants of one
#: site without testing anything new.
KEEP = [
    r"core/ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Pow_Mul"
    r"|LShift_RShift|RShift_LShift|BitAnd_BitOr|BitOr_BitAnd|Mod_FloorDiv)$",
    r"core/ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq"
    r"|Is_IsNot|IsNot_Is)$",
    r"core/ReplaceUnaryOperator_(USub_UAdd|Delete_Not)$",
    r"core/(NumberReplacer|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr"
    r"|ReplaceOrWithAnd|ReplaceBreakWithContinue|ReplaceContinueWithBreak|ZeroIterationForLoop"
    r"|AddNot)$",
]


def _copy_tree(work: Path) -> Path:
    """A private copy of the sources and tests whose ``lrfdyn`` package imports from it.

    pytest runs in the copy, whose folder comes first on ``sys.path``; links inside its
    ``lrfdyn/`` to the subpackage folders (the package-dir mapping) make every
    ``lrfdyn.*`` import resolve in the copy, ahead of the editable install's finder.
    """
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    ignore = shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", "*.egg-info",
                                    ".pytest_cache")
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    for sub in ("train", "export", "loihi", "sim"):
        (tree / "lrfdyn" / sub).symlink_to(tree / sub)
    check = subprocess.run(
        [sys.executable, "-c", "import lrfdyn.loihi.lower as m, lrfdyn.sim.report as r; "
         "print(m.__file__); print(r.__file__)"], cwd=tree, capture_output=True, text=True)
    files = check.stdout.split()
    if check.returncode or not all(f.startswith(str(tree)) for f in files) or len(files) != 2:
        raise SystemExit(f"the copy does not import from itself: {check.stdout}{check.stderr}")
    return tree


def _command(tests: list[str]) -> str:
    return (f"{sys.executable} -m pytest -x -q -p no:cacheprovider "
            f"-m 'not slow' {' '.join(tests)}")


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(line, column) start and end of every annotation in ``source``.

    Under ``from __future__ import annotations`` (every core module) an annotation is a
    string that nothing evaluates, so a mutant inside one (``int | None`` to
    ``int & None``) is equivalent by construction; such mutants are left out and counted.
    Columns are characters, as cosmic-ray's parser counts them, not ast's UTF-8 bytes.
    """
    import ast

    lines = source.splitlines()

    def char_col(line: int, byte_col: int) -> int:
        return len(lines[line - 1].encode()[:byte_col].decode())

    spans = []
    for node in ast.walk(ast.parse(source)):
        notes = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            notes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        for a in notes:
            spans.append(((a.lineno, char_col(a.lineno, a.col_offset)),
                          (a.end_lineno, char_col(a.end_lineno, a.end_col_offset))))
    return spans


def _work_items(module: str) -> tuple[list, int]:
    """cosmic-ray's mutants of ``module`` under :data:`KEEP`, and how many of them sat in
    annotations (left out, see :func:`annotation_spans`)."""
    import re

    from cosmic_ray.commands.init import _all_work_items

    keep = re.compile("|".join(KEEP))
    source = Path(module).read_text()
    postponed = "from __future__ import annotations" in source  # else they run at import
    spans = annotation_spans(source) if postponed else []
    items = [w for w in _all_work_items([Path(module)], {})
             if keep.match(w.mutations[0].operator_name)]
    code = [w for w in items
            if not any(a <= tuple(w.mutations[0].start_pos) < b for a, b in spans)]
    return code, len(items) - len(code)


def run(args: argparse.Namespace) -> dict:
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    modules = chosen(args.only)  # before the copy: a wrong name fails at once
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    before = _digests()
    tree = _copy_tree(work)
    os.chdir(tree)
    for m in TARGETS:  # cosmic-ray writes to the path relative to the cwd: the copy
        if not (tree / m).resolve().is_relative_to(tree) or (tree / m).resolve() == ROOT / m:
            raise SystemExit(f"{m} would be mutated outside the copy {tree}")
    deadline = time.monotonic() + 60 * args.minutes
    plans = {}
    in_annotations = {}
    for m in modules:
        items, in_annotations[m] = _work_items(m)
        # One generator per module, seeded by the seed and the module: a module's sample
        # is the same whichever other modules --only names.
        rng = random.Random(f"{args.seed}:{m}")
        sample = rng.sample(items, min(args.per_module, len(items))) if args.per_module \
            else items
        plans[m] = (items, sample)
        print(f"{m}: {len(items)} mutants ({in_annotations[m]} more in annotations, left "
              f"out), sampling {len(sample)}", flush=True)
    summary: dict = {"minutes": args.minutes, "seed": args.seed, "modules": {}}
    for i, m in enumerate(modules):
        items, sample = plans[m]
        tests = selection(m, args.selection)
        cmd = _command(tests)
        t0 = time.monotonic()
        for _ in range(2):  # once more: on a shared machine a run can be killed for memory
            base = subprocess.run(cmd, shell=True, capture_output=True, text=True)
            if base.returncode == 0:
                break
        baseline_s = time.monotonic() - t0
        if base.returncode != 0:  # a broken selection scores nothing: say so, go on
            print(f"{m}: the test selection fails unmutated (rc {base.returncode}); skipped:\n"
                  f"{(base.stdout + base.stderr)[-3000:]}", flush=True)
            summary["modules"][m] = {"mutants_total": len(items), "sampled": len(sample),
                                     "baseline_failed": True, "score": None,
                                     "killed": 0, "survived": 0, "survivors": [],
                                     "tests": tests}
            continue
        # Each remaining module gets an equal share of the time left.
        share = (deadline - time.monotonic()) / (len(modules) - i)
        stop = time.monotonic() + share
        db_path = work / f"{db_name(m)}.sqlite"
        db_path.unlink(missing_ok=True)
        counts = {"killed": 0, "survived": 0, "incompetent": 0, "no_test": 0, "not_run": 0}
        survivors = []
        with use_db(str(db_path), WorkDB.Mode.create) as db:
            db.add_work_items(sample)
            for item in sample:
                if time.monotonic() > stop:
                    counts["not_run"] += 1
                    continue
                res = mutate_and_test(item.mutations, cmd, timeout=max(30.0, 4 * baseline_s))
                db.set_result(item.job_id, res)
                if res.worker_outcome == WorkerOutcome.NO_TEST:
                    counts["no_test"] += 1
                elif res.test_outcome == TestOutcome.KILLED:
                    counts["killed"] += 1
                elif res.test_outcome == TestOutcome.SURVIVED:
                    counts["survived"] += 1
                    mu = item.mutations[0]
                    survivors.append({"line": mu.start_pos[0], "operator": mu.operator_name,
                                      "in": mu.definition_name,
                                      "diff": "\n".join(l for l in (res.diff or "").splitlines()
                                                        if l[:1] in "+-" and l[:3] not in
                                                        ("+++", "---"))})
                else:
                    counts["incompetent"] += 1
                print(f"  {m}:{item.mutations[0].start_pos[0]} "
                      f"{item.mutations[0].operator_name}: "
                      f"{res.test_outcome or res.worker_outcome}", flush=True)
        ran = counts["killed"] + counts["survived"]
        summary["modules"][m] = {
            "mutants_total": len(items), "in_annotations": in_annotations[m],
            "sampled": len(sample), **counts,
            "score": round(counts["killed"] / ran, 4) if ran else None,
            "baseline_s": round(baseline_s, 1), "tests": tests, "survivors": survivors}
        print(f"{m}: {counts} score {summary['modules'][m]['score']}", flush=True)
    summary["working_tree_unchanged"] = _digests() == before
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (work / "summary.md").write_text(_markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    lines = ["| module | mutants | in annotations (left out) | sampled | run | killed "
             "| survived | score |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in summary["modules"].items():
        ran = r["killed"] + r["survived"]
        score = "n/a" if r["score"] is None else f"{100 * r['score']:.1f} %"
        lines.append(f"| {m} | {r['mutants_total']} | {r.get('in_annotations', 'n/a')} "
                     f"| {r['sampled']} | {ran} | {r['killed']} | {r['survived']} | {score} |")
    if "working_tree_unchanged" in summary:
        lines.append(f"\nseed {summary['seed']}; working-tree modules unchanged by the run "
                     f"(sha256 before/after): {summary['working_tree_unchanged']}")
    for m, r in summary["modules"].items():
        lines.append(f"- tests for {m}: {' '.join(r['tests'])}")
    for m, r in summary["modules"].items():
        for s in r["survivors"]:
            lines.append(f"- survivor {m}:{s['line']} ({s['in']}) {s['operator']}: "
                         f"`{s['diff'].strip()}`")
    return "\n".join(lines) + "\n"


def merge(folders: list[str], out: str) -> dict:
    """One summary from the summary.json of several runs (a later run of a module wins)."""
    summary: dict = {"merged_from": [], "modules": {}, "working_tree_unchanged": True}
    for f in folders:
        part = json.loads((Path(f) / "summary.json").read_text())
        summary["merged_from"].append({"folder": str(f), "seed": part.get("seed"),
                                       "minutes": part.get("minutes"),
                                       "modules": list(part["modules"])})
        summary["modules"].update(part["modules"])
        summary["working_tree_unchanged"] &= bool(part.get("working_tree_unchanged", False))
    summary["seed"] = ",".join(str(m["seed"]) for m in summary["merged_from"])
    summary["modules"] = {m: summary["modules"][m] for m in TARGETS if m in summary["modules"]}
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (work / "summary.md").write_text(_markdown(summary))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=45.0, help="time box for all modules")
    p.add_argument("--per-module", type=int, default=0,
                   help="random sample of mutants per module (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated modules: stems, paths or dotted names, "
                   "e.g. lower,report,sim/dendritic.py (default: every module in TARGETS)")
    p.add_argument("--out", default=str(ROOT / "runs" / "mutation"))
    p.add_argument("--selection", choices=("unit", "broad"), default="unit",
                   help="unit: each module's fast unit tests; broad: plus the integration "
                   "tests (Lava, minutes per mutant)")
    p.add_argument("--merge", nargs="+", metavar="RUN",
                   help="only merge the summary.json of these run folders into --out")
    args = p.parse_args()
    summary = merge(args.merge, args.out) if args.merge else run(args)
    print(_markdown(summary))


if __name__ == "__main__":
    main()
