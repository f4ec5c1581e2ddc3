# Cython declarations of the C ABI: csrc/include/lstm_fast.h, mirrored name for name (the
# header documents every declaration). _core.pyx uses the enum names, never their values.
from libc.stdint cimport int32_t, int64_t, uint32_t


cdef extern from "lstm_fast.h" nogil:
    int LF_ABI_VERSION
    int LF_MAX_DIM
    int LF_MAX_LAYERS

    ctypedef enum lf_status:
        LF_OK
        LF_E_NULL
        LF_E_INVALID_SIZE
        LF_E_TOO_LARGE
        LF_E_NO_MEMORY
        LF_E_WORKSPACE
        LF_E_NONFINITE
        LF_E_BATCH_MISMATCH
        LF_E_ISA_UNAVAILABLE
        LF_E_STRIDE
        LF_E_BAD_LAYER
        LF_E_BAD_ID
        LF_E_BAD_LENGTH
        LF_E_INPUT_KIND

    ctypedef enum lf_isa:
        LF_ISA_AUTO
        LF_ISA_PORTABLE
        LF_ISA_AVX2
        LF_ISA_AVX512

    ctypedef enum lf_layer_kind:
        LF_LAYER_LSTM
        LF_LAYER_DENSE
        LF_LAYER_EMBEDDING
        LF_LAYER_MASKING
        LF_LAYER_GRU
        LF_LAYER_RNN
        LF_LAYER_AFFINE
        LF_LAYER_NORMALIZE

    ctypedef enum lf_merge:
        LF_MERGE_CONCAT
        LF_MERGE_SUM
        LF_MERGE_AVE
        LF_MERGE_MUL

    ctypedef enum lf_activation:
        LF_ACT_LINEAR
        LF_ACT_RELU
        LF_ACT_RELU6
        LF_ACT_TANH
        LF_ACT_SIGMOID
        LF_ACT_HARD_SIGMOID
        LF_ACT_HARD_SIGMOID_02
        LF_ACT_SOFTSIGN
        LF_ACT_SOFTPLUS
        LF_ACT_ELU
        LF_ACT_SELU
        LF_ACT_SILU
        LF_ACT_GELU
        LF_ACT_EXPONENTIAL
        LF_ACT_SOFTMAX
        LF_ACT_LOG_SOFTMAX

    # lf_layer_desc.flags
    unsigned LF_LAYER_RETURN_LAST
    unsigned LF_LAYER_GO_BACKWARDS
    unsigned LF_LAYER_MASK_ZERO
    unsigned LF_LAYER_ZERO_MASKED_OUTPUT
    unsigned LF_LAYER_BIDIRECTIONAL
    unsigned LF_LAYER_RESET_AFTER

    ctypedef enum lf_weights:
        LF_WEIGHTS_F32
        LF_WEIGHTS_F16
        LF_WEIGHTS_BF16
        LF_WEIGHTS_I8

    ctypedef struct lf_layer_desc:
        lf_layer_kind kind
        int32_t input_size
        int32_t units
        const float *w
        const float *w_rec
        const float *bias
        const float *bias_rec
        const float *w_proj
        int32_t proj_size
        lf_activation activation
        lf_activation recurrent_activation
        uint32_t flags
        float mask_value
        const float *w_b
        const float *w_rec_b
        const float *bias_b
        const float *bias_rec_b
        const float *w_proj_b
        lf_merge merge
        float epsilon
        lf_weights weights

    ctypedef struct lf_io:
        int32_t steps
        const float *x
        const int32_t *ids
        ptrdiff_t x_stride_batch
        ptrdiff_t x_stride_time
        const int32_t *lengths
        float *y
        ptrdiff_t y_stride_batch
        ptrdiff_t y_stride_time
        uint32_t flags

    # lf_io.flags
    unsigned LF_RUN_CHECK_FINITE
    unsigned LF_RUN_PARALLEL

    ctypedef struct lf_model:
        pass
    ctypedef struct lf_state:
        pass

    const char *lf_status_string(lf_status status)
    int32_t lf_abi_version()
    lf_isa lf_cpu_best_isa()
    int32_t lf_cpu_fma_width()

    lf_status lf_model_create(const lf_layer_desc *layers, int32_t num_layers, lf_isa isa,
                              lf_model **out)
    void lf_model_free(lf_model *model)
    int32_t lf_model_num_states(const lf_model *model)
    lf_status lf_model_state_sizes(const lf_model *model, int32_t k, int32_t *h_size,
                                   int32_t *c_size)
    int32_t lf_model_input_size(const lf_model *model)
    int32_t lf_model_output_size(const lf_model *model)
    int lf_model_takes_ids(const lf_model *model)
    int lf_model_returns_last(const lf_model *model)
    lf_isa lf_model_isa(const lf_model *model)
    size_t lf_model_step_weight_bytes(const lf_model *model)
    size_t lf_model_bytes(const lf_model *model)

    lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out)
    void lf_state_free(lf_state *state)
    int32_t lf_state_batch(const lf_state *state)
    lf_status lf_state_reset(lf_state *state, const int32_t *indices, int32_t n)
    lf_status lf_state_set(lf_state *state, int32_t k, const float *h, const float *c)
    lf_status lf_state_get(const lf_state *state, int32_t k, float *h, float *c)

    size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps)
    lf_status lf_run(const lf_model *model, lf_state *state, const lf_io *io,
                     void *ws, size_t ws_bytes)

    size_t lf_workspace_size_rows(const lf_model *model, int32_t n, int32_t steps)
    lf_status lf_run_rows(const lf_model *model, lf_state *const *states, const int32_t *rows,
                          int32_t n, const lf_io *io, void *ws, size_t ws_bytes)
    lf_status lf_state_copy_rows(lf_state *dst, const int32_t *dst_rows, const lf_state *src,
                                 const int32_t *src_rows, int32_t n)

    const char *lf_blas_core_name()
    void lf_blas_set_num_threads(int32_t n)

    lf_status lf_pool_start(int32_t spin_us)
    void lf_pool_stop()
    int64_t lf_pool_starts()
    int64_t lf_pool_moves()
