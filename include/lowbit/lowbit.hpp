// lowbit/lowbit.hpp -- umbrella header: everything that needs only Eigen (and optionally xsimd/OpenMP).
#pragma once

#include "config.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/parallel.hpp"
#include "io/atomic_file.hpp"
#include "io/json.hpp"
#include "io/mapped_file.hpp"
#include "io/safetensors.hpp"
#include "pack/bitpack.hpp"
#include "quant/grid.hpp"
#include "quant/policy.hpp"
#include "quant/quantizer.hpp"
#include "quant/spec.hpp"
