// What a user program does with accelerate-cpp: a few training steps of a linear model on the CPU
// through acc::Accelerator. Prints "acc_consumer: ok" when the loss fell and the version matches.
#include <acc/accelerator.hpp>
#include <acc/version.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <iostream>

int main() {
  if (acc::version != ACC_EXPECTED_VERSION) {
    std::cerr << "acc_consumer: acc::version is " << acc::version << ", the build system said " << ACC_EXPECTED_VERSION
              << "\n";
    return 1;
  }
  torch::manual_seed(0);
  acc::Accelerator<acc::Single, acc::FP32> accelerator(acc::AcceleratorOptions().cpu(true));
  torch::nn::Linear net(4, 1);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  auto [model, optimizer] = accelerator.prepare(net, sgd);

  const auto x = torch::randn({32, 4});
  const auto y = x.sum(1, /*keepdim=*/true);
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    const auto loss = torch::nn::functional::mse_loss(model(x), y);
    accelerator.backward(loss);
    optimizer.step();
    (step == 0 ? first_loss : last_loss) = loss.item<double>();
  }
  if (!(last_loss < first_loss / 10)) {
    std::cerr << "acc_consumer: the loss went from " << first_loss << " to " << last_loss << ", not below a tenth\n";
    return 1;
  }
  std::cout << "acc_consumer: ok, accelerate-cpp " << acc::version << ", loss " << first_loss << " -> " << last_loss
            << "\n";
  return 0;
}
