/* OpenMP thread control that also compiles without OpenMP: the serial build answers "1 thread". */
#ifdef _OPENMP
#include <omp.h>
static int edu_seg_openmp_enabled(void) { return 1; }
#else
static int edu_seg_openmp_enabled(void) { return 0; }
static int omp_get_max_threads(void) { return 1; }
static void omp_set_num_threads(int n) { (void)n; }
#endif
