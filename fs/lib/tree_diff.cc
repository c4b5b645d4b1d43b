// DiffTrees: both trees walked together, depth first, directories merged by
// name (see tree_diff.h).
#include "tree_diff.h"

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cryptex {

const char* FileTypeName(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    default:
      return "unknown";
  }
}

namespace {

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

Result<std::vector<DirEntry>> Entries(const View& v, uint64_t dir) {
  std::vector<DirEntry> out;
  CX_RETURN_IF_ERROR(v.ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
    out.push_back(e);
    return true;
  }));
  return out;
}

Result<std::vector<Xattr>> SortedXattrs(const View& v, uint64_t node) {
  CX_ASSIGN_OR_RETURN(std::vector<Xattr> xs, v.ListXattrs(node));
  std::sort(xs.begin(), xs.end(), [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
  return xs;
}

class Differ {
 public:
  Differ(const View& o, const View& n) : old_(o), new_(n) {}

  Result<std::vector<TreeChange>> Run() {
    CX_RETURN_IF_ERROR(Visit("/", old_.root(), new_.root()));
    while (!frames_.empty()) {
      Frame& f = frames_.back();
      const bool more_old = f.i < f.olds.size(), more_new = f.j < f.news.size();
      if (!more_old && !more_new) {
        frames_.pop_back();
        continue;
      }
      // Visit may push a frame (invalidating f): take what it needs first.
      std::optional<uint64_t> o, n;
      std::string name;
      if (more_old && (!more_new || f.olds[f.i].name <= f.news[f.j].name)) {
        name = f.olds[f.i].name;
        o = f.olds[f.i++].ino;
      }
      if (more_new && (!o || f.news[f.j].name == name)) {
        if (!o) name = f.news[f.j].name;
        n = f.news[f.j++].ino;
      }
      CX_RETURN_IF_ERROR(Visit(JoinPath(f.path, name), o, n));
    }
    CX_RETURN_IF_ERROR(HardLinks());
    std::sort(changes_.begin(), changes_.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<TreeChange> out;
    out.reserve(changes_.size());
    for (auto& c : changes_) out.push_back(std::move(c.second));
    return out;
  }

 private:
  // A directory being merged: its entries in each tree (one side empty when
  // the directory is in one tree only, or is one only there) and the next
  // entry of each.
  struct Frame {
    std::string path;
    std::vector<DirEntry> olds, news;
    size_t i = 0, j = 0;
  };
  // A non-directory in both trees with more than one link in either: its
  // names are compared once the walk has met all of them.
  struct LinkPair {
    uint64_t seq;
    std::string path;
    uint64_t old_node, new_node;
    bool old_multi, new_multi;
    std::optional<size_t> change;  // index in changes_, if already changed
  };

  // `path`, in the old tree as node `o` and/or in the new one as `n`.
  Status Visit(const std::string& path, std::optional<uint64_t> o, std::optional<uint64_t> n) {
    const uint64_t seq = seq_++;
    std::optional<InodeInfo> oi, ni;
    if (o) {
      CX_ASSIGN_OR_RETURN(oi, old_.GetAttr(*o));
      NoteName(&old_names_, *oi, path);
    }
    if (n) {
      CX_ASSIGN_OR_RETURN(ni, new_.GetAttr(*n));
      NoteName(&new_names_, *ni, path);
    }
    TreeChange c;
    c.path = path;
    if (!ni) {
      c.kind = TreeChange::Kind::kRemoved;
      c.old_info = *oi;
    } else if (!oi) {
      c.kind = TreeChange::Kind::kAdded;
      c.new_info = *ni;
    } else {
      c.kind = TreeChange::Kind::kChanged;
      c.old_info = *oi;
      c.new_info = *ni;
      if ((oi->mode & S_IFMT) != (ni->mode & S_IFMT)) {
        c.what = kChangeType;
      } else {
        CX_RETURN_IF_ERROR(CompareSameType(&c));
      }
    }
    std::optional<size_t> index;
    if (c.kind != TreeChange::Kind::kChanged || c.what != 0) {
      index = changes_.size();
      changes_.emplace_back(seq, c);
    }
    if (oi && ni && c.what != kChangeType && !oi->is_dir() && (oi->nlink > 1 || ni->nlink > 1)) {
      links_.push_back({seq, path, oi->ino, ni->ino, oi->nlink > 1, ni->nlink > 1, index});
    }
    // Descend into the directory on each side that has one.
    const bool old_dir = oi && oi->is_dir(), new_dir = ni && ni->is_dir();
    if (old_dir || new_dir) {
      Frame f;
      f.path = path;
      if (old_dir) {
        CX_ASSIGN_OR_RETURN(f.olds, Entries(old_, oi->ino));
      }
      if (new_dir) {
        CX_ASSIGN_OR_RETURN(f.news, Entries(new_, ni->ino));
      }
      frames_.push_back(std::move(f));
    }
    return Status::Ok();
  }

  // Sets c->what (and the details) for two nodes of the same file type.
  Status CompareSameType(TreeChange* c) const {
    const InodeInfo& a = c->old_info;
    const InodeInfo& b = c->new_info;
    if ((a.mode & 07777) != (b.mode & 07777)) c->what |= kChangeMode;
    if (a.uid != b.uid || a.gid != b.gid) c->what |= kChangeOwner;
    if (a.mtime_sec != b.mtime_sec || a.mtime_nsec != b.mtime_nsec) c->what |= kChangeMtime;
    if (a.is_reg() && (a.digest != b.digest || a.size != b.size)) c->what |= kChangeContent;
    if ((S_ISCHR(a.mode) || S_ISBLK(a.mode)) && a.rdev != b.rdev) c->what |= kChangeRdev;
    if (a.is_symlink()) {
      CX_ASSIGN_OR_RETURN(std::string ta, old_.ReadLink(a.ino));
      CX_ASSIGN_OR_RETURN(std::string tb, new_.ReadLink(b.ino));
      if (ta != tb) {
        c->what |= kChangeTarget;
        c->old_target = std::move(ta);
        c->new_target = std::move(tb);
      }
    }
    CX_ASSIGN_OR_RETURN(std::vector<Xattr> xa, SortedXattrs(old_, a.ino));
    CX_ASSIGN_OR_RETURN(std::vector<Xattr> xb, SortedXattrs(new_, b.ino));
    size_t i = 0, j = 0;
    while (i < xa.size() || j < xb.size()) {
      if (j == xb.size() || (i < xa.size() && xa[i].name < xb[j].name)) {
        c->xattrs_removed.push_back(xa[i++].name);
      } else if (i == xa.size() || xb[j].name < xa[i].name) {
        c->xattrs_added.push_back(xb[j++].name);
      } else {
        if (xa[i].value != xb[j].value) c->xattrs_changed.push_back(xa[i].name);
        ++i;
        ++j;
      }
    }
    if (!c->xattrs_added.empty() || !c->xattrs_removed.empty() || !c->xattrs_changed.empty()) {
      c->what |= kChangeXattrs;
    }
    return Status::Ok();
  }

  using Names = std::unordered_map<uint64_t, std::vector<std::string>>;

  // Records `path` as a name of a non-directory with more than one link.
  static void NoteName(Names* names, const InodeInfo& in, const std::string& path) {
    if (!in.is_dir() && in.nlink > 1) (*names)[in.ino].push_back(path);
  }

  // Adds kChangeLinks where a node's set of names differs (names were
  // recorded in tree order, so the lists compare as they are).
  Status HardLinks() {
    for (LinkPair& p : links_) {
      std::vector<std::string> a = p.old_multi ? old_names_[p.old_node] : std::vector{p.path};
      std::vector<std::string> b = p.new_multi ? new_names_[p.new_node] : std::vector{p.path};
      if (a == b) continue;
      if (!p.change) {
        TreeChange c;
        c.kind = TreeChange::Kind::kChanged;
        c.path = p.path;
        CX_ASSIGN_OR_RETURN(c.old_info, old_.GetAttr(p.old_node));
        CX_ASSIGN_OR_RETURN(c.new_info, new_.GetAttr(p.new_node));
        p.change = changes_.size();
        changes_.emplace_back(p.seq, std::move(c));
      }
      TreeChange& c = changes_[*p.change].second;
      c.what |= kChangeLinks;
      c.old_links = std::move(a);
      c.new_links = std::move(b);
    }
    return Status::Ok();
  }

  const View& old_;
  const View& new_;
  uint64_t seq_ = 0;  // visit order of paths
  std::vector<Frame> frames_;
  std::vector<std::pair<uint64_t, TreeChange>> changes_;  // (visit order, change)
  Names old_names_, new_names_;
  std::vector<LinkPair> links_;
};

}  // namespace

Result<std::vector<TreeChange>> DiffTrees(const View& old_view, const View& new_view) {
  return Differ(old_view, new_view).Run();
}

}  // namespace cryptex
