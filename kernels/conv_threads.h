/* OpenMP calls used by the conv kernels, with serial stand-ins for a build without OpenMP
 * (openmp_info.h already provides omp_get_max_threads; a serial "team" is thread 0 alone). */
#include "openmp_info.h"
#ifndef _OPENMP
static inline int omp_get_thread_num(void) { return 0; }
#endif
