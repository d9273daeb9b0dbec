"""scikit-learn tests left out of the remote run, each with its reason.

Keys are ``module -> test`` where test is a function name (every parametrization) or
an item name with its ``[id]`` (that parametrization only). Kept as short as honest:
every test that makes sense over HTTP runs, numbers included.
"""

from __future__ import annotations

GM = "sklearn.mixture.tests.test_gaussian_mixture"
BGM = "sklearn.mixture.tests.test_bayesian_mixture"
KM = "sklearn.cluster.tests.test_k_means"

PRIVATE = "inspects or patches private state of the in-process estimator"
WARM_START = (
    "warm_start needs in-process state: the remote refit starts EM from the fitted "
    "values but not from the previous lower bound, so convergence is counted afresh"
)
K_MEANS_FUNCTION = (
    "tests sklearn's k_means function, which fits in this process with sklearn's own "
    "KMeans: no remote estimator takes part"
)
PARTIAL_FIT = "partial_fit is not a service operation (the service fits a whole dataset)"
CALLABLE_INIT = "a callable init cannot travel over HTTP"
VERBOSE = "verbose output is printed by the server process, not captured here"
ARRAY_API = "array API namespaces other than numpy: the service fits numpy float64"

EXCLUDED: dict[str, dict[str, str]] = {
    GM: {
        "test_gaussian_mixture_array_api_compliance": ARRAY_API,
        "test_gaussian_mixture_raises_where_array_api_not_implemented": ARRAY_API,
        "test_gaussian_mixture_precisions_init": PRIVATE + " (_set_parameters)",
        "test_gaussian_mixture_n_parameters": PRIVATE + " (_n_parameters)",
        "test_gaussian_mixture_aic_bic": PRIVATE + " (_n_parameters)",
        "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": PRIVATE
        + " (mocks _estimate_gaussian_parameters in this process)",
        "test_monotonic_likelihood": WARM_START,
        "test_convergence_detected_with_warm_start": WARM_START,
    },
    BGM: {
        "test_compare_covar_type": PRIVATE + " (_check_parameters, _initialize)",
        "test_bayesian_mixture_precisions_prior_initialisation": PRIVATE + " (_check_parameters)",
        "test_monotonic_likelihood": WARM_START,
    },
    KM: {
        "test_relocate_empty_clusters": PRIVATE
        + " (calls _relocate_empty_clusters_dense/_sparse directly)",
        "test_minibatch_update_consistency": PRIVATE + " (calls _mini_batch_step, _labels_inertia)",
        "test_minibatch_reassign": PRIVATE + " (calls _mini_batch_step, _labels_inertia)",
        "test_k_means_function": K_MEANS_FUNCTION,
        "test_inertia": PRIVATE + " (calls _inertia_dense/_sparse directly)",
        "test_sample_weight_init": PRIVATE + " (calls _init_centroids on a local KMeans)",
        "test_sample_weight_zero": PRIVATE + " (calls _init_centroids on a local KMeans)",
        "test_minibatch_kmeans_partial_fit_init": PARTIAL_FIT,
        "test_minibatch_sensible_reassign": PARTIAL_FIT,
        "test_integer_input": PARTIAL_FIT + " (its MiniBatchKMeans half)",
        "test_float_precision": PARTIAL_FIT + "; and float32 (the service fits float64)",
        "test_kmeans_init_auto_with_initial_centroids": PRIVATE + " (_n_init)",
        "test_n_init_auto": PRIVATE + " (_n_init)",
        "test_minibatch_kmeans_init_size": PRIVATE + " (_init_size)",
        "test_kmeans_verbose": VERBOSE,
        "test_minibatch_declared_convergence": VERBOSE,
    },
}

#: Parametrizations only, by the item name's id: the test's other cases run.
CALLABLE_INIT_IDS = ("callable", "<lambda>", "param2-", "param4-")


def reason_for(module: str, item_name: str) -> str | None:
    """The reason ``item_name`` (``test_x`` or ``test_x[id]``) of ``module`` is left out."""
    table = EXCLUDED.get(module, {})
    name, _, ids = item_name.partition("[")
    if item_name in table:
        return table[item_name]
    if name in table:
        return table[name]
    callable_init = any(part in ids for part in CALLABLE_INIT_IDS)
    if module == KM and name in ("test_all_init", "test_wrong_params") and callable_init:
        return CALLABLE_INIT
    if module == KM and name == "test_feature_names_out" and "partial_fit" in ids:
        return PARTIAL_FIT
    return None
