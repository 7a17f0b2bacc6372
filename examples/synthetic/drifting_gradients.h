// A synthetic training job whose gradient spectrum is planted and moves: many
// directions carry the gradient noise early, then the spectrum collapses onto
// a few directions and plateaus, while the loss keeps falling at a rate set
// by the learning rate. Used by the demo trainer and the tests.
#ifndef SPOTTER_EXAMPLES_SYNTHETIC_DRIFTING_GRADIENTS_H_
#define SPOTTER_EXAMPLES_SYNTHETIC_DRIFTING_GRADIENTS_H_

#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "core/types.h"

namespace spotter::examples {

struct DriftOptions {
  int param_dim = 4096;          // P: parameters of the fake model
  int directions = 64;           // orthonormal directions carrying signal
  double alpha_start = 0.3;      // spectrum lambda_i ~ (i+1)^-alpha: flat early
  double alpha_end = 2.5;        // ... steep (low rank) late
  uint64_t collapse_end = 1200;  // step where alpha reaches alpha_end
  double noise_floor = 1e-6;     // isotropic variance per coordinate, relative to lambda_1
  double loss_start = 2.3;
  double loss_min = 0.05;
  double loss_rate = 6.0;  // -d log(loss - loss_min) / d(sum of lr) x 100
  double val_gap = 0.02;   // validation loss sits this far above training loss
  double val_noise = 0.002;
};

// Not thread-safe: one instance per simulated rank.
class DriftingGradients {
 public:
  DriftingGradients(const DriftOptions& options, uint64_t seed);

  // m gradient samples (m x param_dim) at `step`, around the mean gradient.
  RowMatrixXf Sample(uint64_t step, int m);

  // Advances the loss by one optimizer step taken with learning rate `lr`.
  void Step(double lr);
  double loss() const { return loss_; }
  // A noisy validation loss that tracks the training loss.
  double ValidationLoss();

  // The population eigenvalues (all P, largest first) at `step`.
  std::vector<double> Eigenvalues(uint64_t step) const;

 private:
  std::vector<double> Top(uint64_t step) const;

  DriftOptions o_;
  std::mt19937_64 rng_;
  Eigen::MatrixXf basis_;  // P x directions, orthonormal columns
  double loss_;
};

}  // namespace spotter::examples

#endif  // SPOTTER_EXAMPLES_SYNTHETIC_DRIFTING_GRADIENTS_H_
