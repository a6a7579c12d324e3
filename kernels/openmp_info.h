/* OpenMP thread control that also compiles without OpenMP: the serial build answers "1 thread". */
#ifdef _OPENMP
#include <omp.h>
static inline int edu_seg_openmp_enabled(void) { return 1; }
#else
static inline int edu_seg_openmp_enabled(void) { return 0; }
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif

/* Calls that touch fewer array elements than this run on one thread. Waking a second thread
   costs microseconds (milliseconds while another process holds the other core), more than a
   small pooling, resize, RoI or batch-norm call takes in total; PyTorch's parallel_for uses the
   same kind of grain size. Each kernel partitions its work independently of the thread count,
   so results never depend on this choice. */
#define EDU_SEG_GRAIN 32768

static inline int edu_seg_threads_for(long long n_elements) {
    return n_elements < EDU_SEG_GRAIN ? 1 : omp_get_max_threads();
}
