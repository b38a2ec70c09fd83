"""evaluation wiring: runs after latent_diffusion in `kedro run`, thin nodes."""

from __future__ import annotations

from kedro.framework.project import configure_project, pipelines

from medgen.pipelines.evaluation import create_pipeline


def test_evaluation_runs_after_latent_diffusion_in_default():
    configure_project("medgen")
    order = [n.name for n in pipelines["__default__"].nodes]  # topological order
    assert order.index("evaluate_generated_sources") > order.index("latent_diffusion.summarise_run")
    assert order.index("evaluate_generated_sources") > order.index(
        "latent_diffusion.generate_samples"
    )


def test_pipeline_outputs():
    assert create_pipeline().all_outputs() == {
        "evaluation.in_domain_backbone",
        "evaluation.metrics",
        "evaluation.report",
    }


def test_nodes_with_nothing_generated_give_metrics_and_report():
    from medgen.pipelines.evaluation import nodes
    from tests.evaluation.evaluation_helpers import TINY_PARAMS, real_slices

    train, val, test = real_slices(16, seed=0), real_slices(6, seed=2), real_slices(8, seed=1)
    seed = TINY_PARAMS["seed"]
    network = nodes.train_in_domain_feature_network(train, TINY_PARAMS["in_domain_backbone"], seed)
    metrics = nodes.evaluate_generated_sources(
        None, val, test, train, network, None, None, None, None, TINY_PARAMS["scoring"], seed
    )
    assert {s["status"] for s in metrics["sources"]} == {"not present"}
    # the reference is val + test together: 6 + 8 slices of 1 + 2 patients
    assert metrics["reference"]["n_slices"] == 14 and metrics["reference"]["n_patients"] == 3
    page = nodes.build_evaluation_report(metrics, None, val, test, None, TINY_PARAMS["report"])
    assert page.count('class="absent">not present') == 2 and "summary not present" in page


def test_report_shows_the_inpainting_table_with_its_ablation_rows():
    from medgen.evaluation.report import inpainting_section

    stat = {"mean": 0.9, "sd": 0.05, "median": 0.91, "q1": 0.88, "q3": 0.93, "n": 4}
    row = {"ssim": stat, "psnr": stat, "mse": stat, "n_cases": 4, "n_patients": 2}
    summary = {
        "scorer": "synapse_scorer",
        "note": "not comparable with the leaderboard",
        "table": {
            "diffusion": row,
            "diffusion (oracle tissue, leaks ground truth: upper bound)": row,
            "biharmonic": row,
        },
        "headline": {
            "best_baseline_by_ssim": "biharmonic",
            "best_baseline_ssim": 0.9,
            "diffusion_ssim": 0.9,
            "diffusion_beats_best_baseline": False,
        },
    }
    html = inpainting_section(summary)
    assert "synapse_scorer" in html and "leaks ground truth: upper bound" in html
    assert "0.9000 ± 0.0500 (0.9100)" in html and "<td>4</td><td>2</td>" in html
    assert "diffusion beats it: False" in html
    assert "not present" in inpainting_section(None)
