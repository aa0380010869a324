# GPAW build configuration used by the project's setup (GPAW_CONFIG points here).
# Without 'openblas' in libraries GPAW silently builds without BLAS; fftw speeds up plane waves.
compiler = 'g++'
fftw = True
libraries = ['xc', 'fftw3', 'openblas']
