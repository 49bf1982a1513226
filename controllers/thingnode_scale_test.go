package controllers_test

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	thingdbv1 "github.com/thingdb/thingdb/api/v1alpha1"
)

// scaleThingNodes is how many ThingNodes the scale spec creates at once.
const scaleThingNodes = 200

// The scale spec runs only under `make bench-operator` (label "scale").
var _ = Describe("ThingNode controller at scale", Label("scale"), Serial, func() {
	It("should converge 200 ThingNodes created at once", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		template := loadSample(operatorCASample, ns)

		By(fmt.Sprintf("creating %d ThingNodes from 16 goroutines", scaleThingNodes))
		start := time.Now()
		names := make(chan int)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := range names {
					tn := template.DeepCopy()
					tn.Name = fmt.Sprintf("scale-%03d", i)
					Expect(k8sClient.Create(ctx, tn)).To(Succeed())
				}
			})
		}
		for i := range scaleThingNodes {
			names <- i
		}
		close(names)
		wg.Wait()
		created := time.Since(start)

		By("waiting until every ThingNode has its StatefulSet and TLS and a status for its generation")
		Eventually(ctx, func(g Gomega) {
			var list thingdbv1.ThingNodeList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(scaleThingNodes))
			converged := 0
			for i := range list.Items {
				tn := &list.Items[i]
				if tn.Status.ObservedGeneration == tn.Generation &&
					meta.IsStatusConditionTrue(tn.Status.Conditions, thingdbv1.ConditionTLSReady) &&
					meta.IsStatusConditionFalse(tn.Status.Conditions, thingdbv1.ConditionDegraded) {
					converged++
				}
			}
			g.Expect(converged).To(Equal(scaleThingNodes))
			var statefulSets appsv1.StatefulSetList
			g.Expect(k8sClient.List(ctx, &statefulSets, client.InNamespace(ns))).To(Succeed())
			g.Expect(statefulSets.Items).To(HaveLen(scaleThingNodes))
		}).WithTimeout(10 * time.Minute).WithPolling(time.Second).Should(Succeed())
		converge := time.Since(start)
		convergeWrites := writes.Count(ns)

		By("counting the writes of 10 seconds after convergence")
		time.Sleep(10 * time.Second)
		idleWrites := writes.Count(ns) - convergeWrites

		report := fmt.Sprintf("ThingNodes: %d (3 replicas, 2 tokens, OperatorCA each)\n"+
			"created in: %s\nconverged in: %s\nAPI writes: %d (%.1f per ThingNode)\nwrites in the 10 s after convergence: %d\n"+
			"GOMAXPROCS: %d, max concurrent reconciles: 4",
			scaleThingNodes, created.Round(time.Millisecond), converge.Round(time.Millisecond),
			convergeWrites, float64(convergeWrites)/scaleThingNodes, idleWrites, runtime.GOMAXPROCS(0))
		AddReportEntry("operator scale", report)
		GinkgoWriter.Println(report)
		Expect(idleWrites).To(BeZero())
	})
})
