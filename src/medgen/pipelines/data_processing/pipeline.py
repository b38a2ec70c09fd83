"""``data_processing`` wiring."""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.data_processing import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.generate_cohort, "params:cohort", "raw_cohort", name="generate_cohort"),
            node(nodes.write_captions, "raw_cohort", "captions", name="write_captions"),
            node(
                nodes.write_expert_ratings,
                ["raw_cohort", "params:cohort"],
                "expert_ratings",
                name="write_expert_ratings",
            ),
            node(
                nodes.validate_cohort,
                ["raw_cohort", "params:validation", "params:on_bad_subject"],
                ["validation_report", "rejected_subjects"],
                name="validate_cohort",
            ),
            node(
                nodes.preprocess_cohort,
                ["raw_cohort", "validation_report", "params:validation", "params:preprocessing"],
                "preprocessed_cohort",
                name="preprocess_cohort",
            ),
            node(
                nodes.split_subjects,
                ["validation_report", "params:split"],
                "subject_splits",
                name="split_subjects",
            ),
            node(
                nodes.make_model_inputs,
                ["preprocessed_cohort", "subject_splits", "params:slices", "params:volumes"],
                [
                    "slices_2d_train",
                    "slices_2d_val",
                    "slices_2d_test",
                    "volumes_3d_train",
                    "volumes_3d_val",
                    "volumes_3d_test",
                ],
                name="make_model_inputs",
            ),
            node(
                nodes.summarise_data,
                [
                    "validation_report",
                    "subject_splits",
                    "slices_2d_train",
                    "slices_2d_val",
                    "slices_2d_test",
                    "volumes_3d_train",
                ],
                "data_summary",
                name="summarise_data",
            ),
        ]
    )
