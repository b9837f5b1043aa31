#include "dist/dist_env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <map>

#include "util/error.h"

namespace medseg {
namespace {

using Table = std::map<std::string, std::string>;

EnvLookup lookup(const Table& table) {
  return [table](const std::string& name) -> std::optional<std::string> {
    const auto it = table.find(name);
    if (it == table.end()) return std::nullopt;
    return it->second;
  };
}

Table torchrun_table() {
  return {{"MASTER_ADDR", "10.0.0.5"}, {"MASTER_PORT", "29400"}, {"RANK", "5"},
          {"WORLD_SIZE", "8"},         {"LOCAL_RANK", "1"},      {"LOCAL_WORLD_SIZE", "4"}};
}

ResourceConfig three_hosts(const std::string& current) {
  ResourceConfig resources;
  resources.hosts = {"algo-2", "algo-10", "algo-1"};
  resources.current_host = current;
  resources.from_file = true;
  return resources;
}

TEST(DistEnvTest, TorchrunVariablesWin) {
  const DistEnv env = resolve_dist_env(three_hosts("algo-2"), /*nproc_per_node=*/2,
                                       /*master_port=*/29500, lookup(torchrun_table()));
  EXPECT_TRUE(env.from_torchrun);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.5");
  EXPECT_EQ(env.master_port, 29400);
}

TEST(DistEnvTest, TorchrunGroupRankIsTheNodeRank) {
  Table table = torchrun_table();
  table["GROUP_RANK"] = "0";
  EXPECT_EQ(resolve_dist_env(ResourceConfig{}, 1, 29500, lookup(table)).node_rank, 0);
}

TEST(DistEnvTest, BadTorchrunValuesNameTheVariable) {
  struct Case {
    std::string variable;
    std::optional<std::string> value;  // nullopt = unset
  };
  const Case cases[] = {
      {"RANK", "abc"},
      {"RANK", "8"},
      {"RANK", "-1"},
      {"RANK", "2x"},
      {"WORLD_SIZE", "0"},
      {"WORLD_SIZE", ""},
      {"LOCAL_RANK", "4"},
      {"LOCAL_RANK", std::nullopt},
      {"LOCAL_WORLD_SIZE", "9"},
      {"LOCAL_WORLD_SIZE", std::nullopt},
      {"MASTER_PORT", "70000"},
      {"MASTER_PORT", "0"},
      {"MASTER_PORT", std::nullopt},
      {"MASTER_ADDR", ""},
      {"MASTER_ADDR", std::nullopt},
  };
  for (const Case& test_case : cases) {
    Table table = torchrun_table();
    if (test_case.value) {
      table[test_case.variable] = *test_case.value;
    } else {
      table.erase(test_case.variable);
    }
    const std::string label = test_case.variable + "=" + test_case.value.value_or("<unset>");
    try {
      resolve_dist_env(ResourceConfig{}, 1, 29500, lookup(table));
      ADD_FAILURE() << label << " was accepted";
    } catch (const ClientError& error) {
      EXPECT_NE(std::string(error.what()).find(test_case.variable), std::string::npos)
          << label << ": " << error.what();
    }
  }
}

TEST(DistEnvTest, ResourceConfigKeepsHostOrder) {
  struct Case {
    std::string current_host;
    std::string local_rank;
    int node_rank;
    int rank;
  };
  // hosts ["algo-2", "algo-10", "algo-1"] x 4 processes; never sorted ("algo-10" < "algo-2").
  const Case cases[] = {{"algo-2", "0", 0, 0},
                        {"algo-2", "3", 0, 3},
                        {"algo-10", "0", 1, 4},
                        {"algo-10", "3", 1, 7},
                        {"algo-1", "2", 2, 10}};
  for (const Case& test_case : cases) {
    const DistEnv env = resolve_dist_env(three_hosts(test_case.current_host), 4, 29511,
                                         lookup({{"MEDSEG_LOCAL_RANK", test_case.local_rank}}));
    const std::string label = test_case.current_host + "/" + test_case.local_rank;
    EXPECT_FALSE(env.from_torchrun) << label;
    EXPECT_EQ(env.world_size, 12) << label;
    EXPECT_EQ(env.num_nodes, 3) << label;
    EXPECT_EQ(env.local_world_size, 4) << label;
    EXPECT_EQ(env.node_rank, test_case.node_rank) << label;
    EXPECT_EQ(env.rank, test_case.rank) << label;
    EXPECT_EQ(env.local_rank, std::stoi(test_case.local_rank)) << label;
    EXPECT_EQ(env.master_addr, "algo-2") << label;
    EXPECT_EQ(env.master_port, 29511) << label;
  }
}

TEST(DistEnvTest, SingleHostUsesLoopbackAndDefaultsToLocalRankZero) {
  const DistEnv env = resolve_dist_env(ResourceConfig{}, 1, 29500, lookup({}));
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_FALSE(env.is_distributed());
  EXPECT_EQ(env.master_addr, "127.0.0.1");

  const DistEnv second =
      resolve_dist_env(ResourceConfig{}, 2, 29500, lookup({{"MEDSEG_LOCAL_RANK", "1"}}));
  EXPECT_EQ(second.rank, 1);
  EXPECT_EQ(second.world_size, 2);
  EXPECT_TRUE(second.is_distributed());
}

TEST(DistEnvTest, BadResourceConfigValues) {
  EXPECT_THROW(resolve_dist_env(three_hosts("algo-3"), 1, 29500, lookup({})), ClientError);
  EXPECT_THROW(resolve_dist_env(ResourceConfig{}, 1, 0, lookup({})), ClientError);
  for (const std::string bad : {"2", "-1", "one", ""}) {
    try {
      resolve_dist_env(ResourceConfig{}, 2, 29500, lookup({{"MEDSEG_LOCAL_RANK", bad}}));
      ADD_FAILURE() << "MEDSEG_LOCAL_RANK=" << bad << " was accepted";
    } catch (const ClientError& error) {
      EXPECT_NE(std::string(error.what()).find("MEDSEG_LOCAL_RANK"), std::string::npos);
    }
  }
}

TEST(DistEnvTest, NprocPerNodeZeroMeansOnePerGpu) {
  EXPECT_EQ(resolve_nproc_per_node(0, 0), 1);
  EXPECT_EQ(resolve_nproc_per_node(0, 8), 8);
  EXPECT_EQ(resolve_nproc_per_node(2, 8), 2);
}

TEST(DistEnvTest, ResolveHost) {
  EXPECT_EQ(resolve_host("127.0.0.1", 0), "127.0.0.1");
  const std::string localhost = resolve_host("localhost", 0);
  EXPECT_TRUE(localhost == "127.0.0.1" || localhost == "::1") << localhost;

  const auto start = std::chrono::steady_clock::now();
  try {
    resolve_host("no-such-host.invalid", /*retry_seconds=*/1);
    ADD_FAILURE() << "an unresolvable host resolved";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find("no-such-host.invalid"), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(DistEnvTest, EfaInstanceTypes) {
  for (const char* type :
       {"ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge",
        "ml.p5en.48xlarge", "p3dn.24xlarge", "ml.trn1.32xlarge"}) {
    EXPECT_TRUE(has_efa(type)) << type;
  }
  for (const char* type :
       {"ml.p3.16xlarge", "ml.g5.xlarge", "ml.c5.2xlarge", "", "local", "ml.p4"}) {
    EXPECT_FALSE(has_efa(type)) << type;
  }
}

// Saves and restores the variables apply_network_environment touches.
class DistNetworkEnvTest : public ::testing::Test {
 protected:
  static constexpr const char* kNames[] = {"NCCL_SOCKET_IFNAME", "FI_PROVIDER", "NCCL_PROTO",
                                           "FI_EFA_USE_DEVICE_RDMA", "RDMAV_FORK_SAFE"};
  void SetUp() override {
    for (const char* name : kNames) {
      if (const char* value = std::getenv(name)) saved_[name] = value;
      ::unsetenv(name);
    }
  }
  void TearDown() override {
    for (const char* name : kNames) {
      ::unsetenv(name);
      if (saved_.count(name)) ::setenv(name, saved_[name].c_str(), 1);
    }
  }
  static std::string get(const char* name) {
    const char* value = std::getenv(name);
    return value == nullptr ? "<unset>" : value;
  }
  std::map<std::string, std::string> saved_;
};

TEST_F(DistNetworkEnvTest, P4dGetsEveryVariable) {
  ResourceConfig resources;
  resources.network_interface_name = "lo";  // an interface every host has
  const auto applied = apply_network_environment(resources, "ml.p4d.24xlarge");
  EXPECT_EQ(applied.size(), 5u);
  EXPECT_EQ(get("NCCL_SOCKET_IFNAME"), "lo");
  EXPECT_EQ(get("FI_PROVIDER"), "efa");
  EXPECT_EQ(get("NCCL_PROTO"), "simple");
  EXPECT_EQ(get("FI_EFA_USE_DEVICE_RDMA"), "1");
  EXPECT_EQ(get("RDMAV_FORK_SAFE"), "1");
}

ResourceConfig with_interface(const std::string& name) {
  ResourceConfig resources;
  resources.network_interface_name = name;
  return resources;
}

TEST_F(DistNetworkEnvTest, P5GetsEfaButNotTheP4dExtras) {
  apply_network_environment(with_interface("lo"), "ml.p5.48xlarge");
  EXPECT_EQ(get("NCCL_SOCKET_IFNAME"), "lo");
  EXPECT_EQ(get("FI_PROVIDER"), "efa");
  EXPECT_EQ(get("NCCL_PROTO"), "simple");
  EXPECT_EQ(get("FI_EFA_USE_DEVICE_RDMA"), "<unset>");
  EXPECT_EQ(get("RDMAV_FORK_SAFE"), "<unset>");
}

TEST_F(DistNetworkEnvTest, NonEfaGetsOnlyTheInterface) {
  apply_network_environment(with_interface("lo"), "ml.g5.12xlarge");
  EXPECT_EQ(get("NCCL_SOCKET_IFNAME"), "lo");
  EXPECT_EQ(get("FI_PROVIDER"), "<unset>");
  EXPECT_EQ(get("NCCL_PROTO"), "<unset>");
}

// SageMaker local mode (SDK v2 and v3) writes network_interface_name "ethwe", which its Docker
// network does not create: naming it would make NCCL fail to find any interface.
TEST_F(DistNetworkEnvTest, AnInterfaceThisHostLacksIsLeftToNccl) {
  const auto applied = apply_network_environment(with_interface("ethwe"), "ml.g5.12xlarge");
  EXPECT_EQ(get("NCCL_SOCKET_IFNAME"), "<unset>");
  EXPECT_TRUE(applied.empty());
}

TEST_F(DistNetworkEnvTest, UserValuesAreKept) {
  ::setenv("NCCL_SOCKET_IFNAME", "ens5", 1);
  ::setenv("NCCL_PROTO", "LL128", 1);
  const auto applied = apply_network_environment(ResourceConfig{}, "ml.p4de.24xlarge");
  EXPECT_EQ(get("NCCL_SOCKET_IFNAME"), "ens5");
  EXPECT_EQ(get("NCCL_PROTO"), "LL128");
  EXPECT_EQ(get("FI_PROVIDER"), "efa");
  EXPECT_EQ(applied.size(), 3u);
}

}  // namespace
}  // namespace medseg
